//! GeoIP lookups of client addresses in MaxMind DB files (MaxMind
//! GeoLite2/GeoIP2 or DB-IP): autonomous system, country, city, coordinates,
//! and whether the address is a VPN, Tor exit node, hosting provider or
//! proxy. Configured lists of hosting networks complete the databases.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use ipnet::IpNet;
use maxminddb::Reader;
use serde::Deserialize;
use stepgate_core::{Coordinates, Location, Locator};

/// Maximum number of addresses in the lookup memo. Past this the memo is
/// cleared, so a scan from many addresses cannot grow memory without bound.
const MEMO_LIMIT: usize = 65_536;

/// Error opening a database.
#[derive(Debug, thiserror::Error)]
pub enum GeoError {
    #[error(
        "geoip.{key}: cannot open GeoIP database {path}: {reason}; check that the file is a MaxMind DB (.mmdb) and readable"
    )]
    Open {
        key: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("geoip.{key}: {path} is a {found} database; use a database of type {expected}")]
    WrongType {
        key: &'static str,
        path: PathBuf,
        found: String,
        expected: String,
    },
}

/// Paths of the databases to open (each optional) and listed networks.
#[derive(Clone, Debug, Default)]
pub struct GeoSources {
    pub asn_db: Option<PathBuf>,
    pub city_db: Option<PathBuf>,
    pub anonymous_db: Option<PathBuf>,
    pub hosting_networks: Vec<IpNet>,
}

/// The opened databases.
pub struct Geo {
    asn: Option<Reader<Vec<u8>>>,
    city: Option<Reader<Vec<u8>>>,
    anonymous: Option<Reader<Vec<u8>>>,
    hosting: Vec<IpNet>,
    memo: RwLock<HashMap<IpAddr, Option<Arc<Location>>>>,
}

impl std::fmt::Debug for Geo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Geo")
            .field("asn", &self.asn.is_some())
            .field("city", &self.city.is_some())
            .field("anonymous", &self.anonymous.is_some())
            .field("hosting", &self.hosting)
            .finish()
    }
}

#[derive(Deserialize)]
struct AsnRecord<'a> {
    autonomous_system_number: Option<u32>,
    #[serde(borrow)]
    autonomous_system_organization: Option<&'a str>,
}

#[derive(Deserialize)]
struct CityRecord<'a> {
    #[serde(borrow)]
    city: Option<Named<'a>>,
    #[serde(borrow)]
    country: Option<Country<'a>>,
    location: Option<Place>,
}

#[derive(Deserialize)]
struct Named<'a> {
    #[serde(borrow)]
    names: Option<English<'a>>,
}

#[derive(Deserialize)]
struct English<'a> {
    en: Option<&'a str>,
}

#[derive(Deserialize)]
struct Country<'a> {
    iso_code: Option<&'a str>,
}

#[derive(Deserialize)]
struct Place {
    latitude: Option<f64>,
    longitude: Option<f64>,
    accuracy_radius: Option<u16>,
}

#[derive(Deserialize)]
struct AnonymousRecord {
    is_anonymous: Option<bool>,
    is_anonymous_vpn: Option<bool>,
    is_hosting_provider: Option<bool>,
    is_public_proxy: Option<bool>,
    is_residential_proxy: Option<bool>,
    is_tor_exit_node: Option<bool>,
}

impl AnonymousRecord {
    /// Returns the most telling flag the record sets.
    fn kind(&self) -> Option<&'static str> {
        let flags = [
            (self.is_tor_exit_node, "tor exit node"),
            (self.is_public_proxy, "public proxy"),
            (self.is_residential_proxy, "residential proxy"),
            (self.is_anonymous_vpn, "anonymous VPN"),
            (self.is_hosting_provider, "hosting provider"),
            (self.is_anonymous, "anonymous network"),
        ];
        flags
            .into_iter()
            .find(|(flag, _)| *flag == Some(true))
            .map(|(_, kind)| kind)
    }
}

/// Opens and verifies the database configured as `key`, whose type must
/// contain one of `types` (as in `GeoLite2-ASN` or `DBIP-City-Lite`).
fn open(
    key: &'static str,
    path: &Path,
    types: &'static [&'static str],
) -> Result<Reader<Vec<u8>>, GeoError> {
    let failed = |reason: String| GeoError::Open {
        key,
        path: path.to_owned(),
        reason,
    };
    let reader = Reader::open_readfile(path).map_err(|err| failed(err.to_string()))?;
    // A damaged file is refused now rather than failing lookups later.
    reader
        .verify()
        .map_err(|err| failed(format!("damaged: {err}")))?;
    let found = &reader.metadata().database_type;
    if !types.iter().any(|kind| found.contains(kind)) {
        return Err(GeoError::WrongType {
            key,
            path: path.to_owned(),
            found: found.clone(),
            expected: types.join(" or "),
        });
    }
    Ok(reader)
}

impl Geo {
    /// Opens the configured databases; any that cannot be read is an error
    /// naming the file.
    pub fn open(sources: &GeoSources) -> Result<Self, GeoError> {
        let asn = sources
            .asn_db
            .as_deref()
            .map(|path| open("asn_db", path, &["ASN", "ISP"]))
            .transpose()?;
        let city = sources
            .city_db
            .as_deref()
            .map(|path| open("city_db", path, &["City", "Country"]))
            .transpose()?;
        let anonymous = sources
            .anonymous_db
            .as_deref()
            .map(|path| open("anonymous_db", path, &["Anonymous"]))
            .transpose()?;
        for (name, reader) in [("asn", &asn), ("city", &city), ("anonymous", &anonymous)] {
            if let Some(reader) = reader {
                tracing::info!(
                    database = name,
                    kind = %reader.metadata().database_type,
                    built = reader.metadata().build_epoch,
                    "GeoIP database opened"
                );
            }
        }
        Ok(Self {
            asn,
            city,
            anonymous,
            hosting: sources.hosting_networks.clone(),
            memo: RwLock::new(HashMap::new()),
        })
    }

    /// Looks `addr` up in every database without the memo.
    pub fn lookup(&self, addr: IpAddr) -> Option<Location> {
        let mut location = Location::default();
        if let Some(record) = decode::<AsnRecord<'_>>(self.asn.as_ref(), addr) {
            location.asn = record.autonomous_system_number;
            location.as_org = record.autonomous_system_organization.map(str::to_owned);
        }
        if let Some(record) = decode::<CityRecord<'_>>(self.city.as_ref(), addr) {
            location.country = record
                .country
                .and_then(|country| country.iso_code)
                .map(str::to_owned);
            location.city = record
                .city
                .and_then(|city| city.names)
                .and_then(|names| names.en)
                .map(str::to_owned);
            location.coordinates = record.location.and_then(|place| {
                let (latitude, longitude) = (place.latitude?, place.longitude?);
                let valid = latitude.is_finite()
                    && longitude.is_finite()
                    && latitude.abs() <= 90.0
                    && longitude.abs() <= 180.0;
                valid.then_some(Coordinates {
                    latitude,
                    longitude,
                    accuracy_km: place.accuracy_radius.unwrap_or(0),
                })
            });
        }
        if let Some(record) = decode::<AnonymousRecord>(self.anonymous.as_ref(), addr) {
            location.anonymizer = record.kind().map(str::to_owned);
        }
        if location.anonymizer.is_none()
            && let Some(net) = self.hosting.iter().find(|net| net.contains(&addr))
        {
            location.anonymizer = Some(format!("listed hosting network {net}"));
        }
        (!location.is_empty()).then_some(location)
    }
}

/// Decodes the record of `addr`, or `None` when the address is not in the
/// database or its record cannot be read (logged: a damaged database must
/// not stop the gateway).
fn decode<'de, T: Deserialize<'de>>(
    reader: Option<&'de Reader<Vec<u8>>>,
    addr: IpAddr,
) -> Option<T> {
    let reader = reader?;
    let result = match reader.lookup(addr) {
        Ok(result) => result,
        Err(err) => {
            tracing::warn!(client.addr = %addr, error = %err, "GeoIP lookup failed");
            return None;
        }
    };
    match result.decode::<T>() {
        Ok(record) => record,
        Err(err) => {
            tracing::warn!(client.addr = %addr, error = %err, "GeoIP record unreadable");
            None
        }
    }
}

impl Locator for Geo {
    fn locate(&self, addr: IpAddr) -> Option<Arc<Location>> {
        if let Ok(memo) = self.memo.read()
            && let Some(known) = memo.get(&addr)
        {
            return known.clone();
        }
        let location = self.lookup(addr).map(Arc::new);
        if let Ok(mut memo) = self.memo.write() {
            if memo.len() >= MEMO_LIMIT {
                memo.clear();
            }
            memo.insert(addr, location.clone());
        }
        location
    }
}

#[cfg(test)]
mod tests;
