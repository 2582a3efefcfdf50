//! Location and owner of a client address, as a GeoIP database or the
//! configuration describes them.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Mean radius of the Earth in kilometres (IUGG).
const EARTH_RADIUS_KM: f64 = 6371.0088;

/// Known facts about the place and owner of a client address. Every field
/// is optional, because a deployment may configure no database, or only some.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Location {
    /// Autonomous system number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asn: Option<u32>,
    /// Organisation that announces the autonomous system.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub as_org: Option<String>,
    /// ISO 3166-1 alpha-2 country code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    /// City name in English.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub city: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coordinates: Option<Coordinates>,
    /// Kind of hosting or anonymising network the address belongs to, such as
    /// `tor exit node` or `listed network 203.0.113.0/24`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anonymizer: Option<String>,
}

impl Location {
    pub fn is_empty(&self) -> bool {
        self == &Location::default()
    }

    /// Autonomous system as people write it, such as `AS64500 (Example Net)`.
    pub fn as_label(&self) -> Option<String> {
        let asn = self.asn?;
        Some(match &self.as_org {
            Some(org) => format!("AS{asn} ({org})"),
            None => format!("AS{asn}"),
        })
    }

    /// City and country as people write them, such as `Linköping, SE`.
    pub fn place(&self) -> Option<String> {
        match (&self.city, &self.country) {
            (Some(city), Some(country)) => Some(format!("{city}, {country}")),
            (None, Some(country)) => Some(country.clone()),
            (Some(city), None) => Some(city.clone()),
            (None, None) => None,
        }
    }
}

/// Looks client addresses up; implemented over GeoIP databases and
/// configured network lists.
pub trait Locator: Send + Sync {
    /// Looks `addr` up; `None` when nothing is known about it.
    fn locate(&self, addr: IpAddr) -> Option<Arc<Location>>;
}

/// A point on the Earth with the radius, in kilometres, within which the
/// address is likely to be.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Coordinates {
    pub latitude: f64,
    pub longitude: f64,
    #[serde(default)]
    pub accuracy_km: u16,
}

impl Coordinates {
    /// Great-circle distance in kilometres (haversine formula).
    pub fn distance_km(&self, other: &Coordinates) -> f64 {
        let (lat1, lat2) = (self.latitude.to_radians(), other.latitude.to_radians());
        let dlat = lat2 - lat1;
        let dlon = (other.longitude - self.longitude).to_radians();
        let a = (dlat / 2.0).sin().powi(2) + lat1.cos() * lat2.cos() * (dlon / 2.0).sin().powi(2);
        2.0 * EARTH_RADIUS_KM * a.sqrt().min(1.0).asin()
    }
}

impl fmt::Display for Coordinates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.4},{:.4}", self.latitude, self.longitude)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(latitude: f64, longitude: f64) -> Coordinates {
        Coordinates {
            latitude,
            longitude,
            accuracy_km: 0,
        }
    }

    #[test]
    fn distance_matches_known_city_pairs() {
        // Paris to London is about 344 km, New York to Los Angeles about
        // 3936 km along the great circle.
        let paris = at(48.8566, 2.3522);
        let london = at(51.5074, -0.1278);
        let distance = paris.distance_km(&london);
        assert!((distance - 343.5).abs() < 2.0, "{distance}");
        let new_york = at(40.7128, -74.0060);
        let los_angeles = at(34.0522, -118.2437);
        let distance = new_york.distance_km(&los_angeles);
        assert!((distance - 3936.0).abs() < 10.0, "{distance}");
        assert_eq!(paris.distance_km(&paris), 0.0);
    }

    #[test]
    fn distance_of_antipodes_is_half_the_circumference() {
        let distance = at(0.0, 0.0).distance_km(&at(0.0, 180.0));
        assert!((distance - std::f64::consts::PI * EARTH_RADIUS_KM).abs() < 1e-6);
    }

    #[test]
    fn labels_read_like_people_write_them() {
        let location = Location {
            asn: Some(64500),
            as_org: Some("Example Net".to_owned()),
            country: Some("SE".to_owned()),
            city: Some("Linköping".to_owned()),
            ..Location::default()
        };
        assert_eq!(location.as_label().unwrap(), "AS64500 (Example Net)");
        assert_eq!(location.place().unwrap(), "Linköping, SE");
        assert!(Location::default().is_empty());
    }
}
