use std::path::PathBuf;

use serde_json::Value;

use super::*;

fn testdata(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/geoip")
        .join(name)
}

fn geo(asn: bool, city: bool, anonymous: bool) -> Geo {
    let sources = GeoSources {
        asn_db: asn.then(|| testdata("GeoLite2-ASN-Test.mmdb")),
        city_db: city.then(|| testdata("GeoLite2-City-Test.mmdb")),
        anonymous_db: anonymous.then(|| testdata("GeoIP2-Anonymous-IP-Test.mmdb")),
        hosting_networks: vec!["203.0.113.0/24".parse().unwrap()],
    };
    Geo::open(&sources).unwrap()
}

/// Reads the records each test database was built from, as (network,
/// record).
fn source(name: &str) -> Vec<(IpNet, Value)> {
    let text = std::fs::read_to_string(testdata(name)).unwrap();
    let entries: Vec<serde_json::Map<String, Value>> = serde_json::from_str(&text).unwrap();
    entries
        .into_iter()
        .flat_map(|entry| entry.into_iter())
        .map(|(cidr, record)| (cidr.parse::<IpNet>().unwrap(), record))
        .collect()
}

/// Returns, for the first address of every source network, the record of
/// the most specific network that contains it: the expected lookup result.
fn expectations(name: &str) -> Vec<(IpAddr, Value)> {
    let records = source(name);
    records
        .iter()
        .map(|(net, _)| {
            let addr = net.network();
            let (_, record) = records
                .iter()
                .filter(|(other, _)| other.contains(&addr))
                .max_by_key(|(other, _)| other.prefix_len())
                .unwrap();
            (addr, record.clone())
        })
        .collect()
}

#[test]
fn asn_answers_match_the_source_records() {
    let geo = geo(true, false, false);
    let expected = expectations("GeoLite2-ASN-Test.json");
    assert!(expected.len() > 500);
    for (addr, record) in expected {
        let location = geo.lookup(addr).unwrap_or_default();
        assert_eq!(
            location.asn.map(u64::from),
            record["autonomous_system_number"].as_u64(),
            "{addr}"
        );
        assert_eq!(
            location.as_org.as_deref(),
            record["autonomous_system_organization"].as_str(),
            "{addr}"
        );
    }
}

#[test]
fn city_answers_match_the_source_records() {
    let geo = geo(false, true, false);
    let expected = expectations("GeoLite2-City-Test.json");
    let mut with_coordinates = 0;
    for (addr, record) in expected {
        let location = geo.lookup(addr).unwrap_or_default();
        assert_eq!(
            location.country.as_deref(),
            record["country"]["iso_code"].as_str(),
            "{addr}"
        );
        assert_eq!(
            location.city.as_deref(),
            record["city"]["names"]["en"].as_str(),
            "{addr}"
        );
        let place = &record["location"];
        match (location.coordinates, place["latitude"].as_f64()) {
            (Some(coordinates), Some(latitude)) => {
                with_coordinates += 1;
                assert_eq!(coordinates.latitude, latitude, "{addr}");
                assert_eq!(
                    Some(coordinates.longitude),
                    place["longitude"].as_f64(),
                    "{addr}"
                );
                assert_eq!(
                    u64::from(coordinates.accuracy_km),
                    place["accuracy_radius"].as_u64().unwrap_or(0),
                    "{addr}"
                );
            }
            (None, None) => {}
            (got, want) => panic!("{addr}: coordinates {got:?}, expected latitude {want:?}"),
        }
    }
    assert!(with_coordinates > 10, "{with_coordinates}");
}

#[test]
fn anonymous_flags_match_the_source_records() {
    let geo = geo(false, false, true);
    for (addr, record) in expectations("GeoIP2-Anonymous-IP-Test.json") {
        let location = geo.lookup(addr).unwrap();
        let flag = |name: &str| record[name].as_bool() == Some(true);
        let expected = if flag("is_tor_exit_node") {
            "tor exit node"
        } else if flag("is_public_proxy") {
            "public proxy"
        } else if flag("is_residential_proxy") {
            "residential proxy"
        } else if flag("is_anonymous_vpn") {
            "anonymous VPN"
        } else if flag("is_hosting_provider") {
            "hosting provider"
        } else {
            "anonymous network"
        };
        assert_eq!(location.anonymizer.as_deref(), Some(expected), "{addr}");
    }
}

#[test]
fn combined_lookup_and_listed_networks() {
    let geo = geo(true, true, true);
    // From the City test database: Linköping, Sweden.
    let linkoping = geo.lookup("89.160.20.112".parse().unwrap()).unwrap();
    assert_eq!(linkoping.country.as_deref(), Some("SE"));
    assert_eq!(linkoping.city.as_deref(), Some("Linköping"));
    assert!(linkoping.coordinates.is_some());
    // Not in any database, but in the configured hosting list.
    let listed = geo.lookup("203.0.113.9".parse().unwrap()).unwrap();
    assert_eq!(
        listed.anonymizer.as_deref(),
        Some("listed hosting network 203.0.113.0/24")
    );
    // Nowhere at all.
    assert_eq!(geo.lookup("127.0.0.1".parse().unwrap()), None);
    // The memo returns the same as the databases.
    let addr: IpAddr = "89.160.20.112".parse().unwrap();
    assert_eq!(geo.locate(addr).as_deref(), Some(&linkoping));
    assert_eq!(geo.locate(addr).as_deref(), Some(&linkoping));
}

#[test]
fn damaged_databases_refused_at_open() {
    let entries = std::fs::read_dir(testdata("")).unwrap();
    let mut tried = 0;
    for entry in entries {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !(name.starts_with("bad-data") || name.contains("Broken") || name.contains("Invalid")) {
            continue;
        }
        tried += 1;
        let sources = GeoSources {
            city_db: Some(path.clone()),
            ..GeoSources::default()
        };
        match Geo::open(&sources) {
            Err(err) => assert!(err.to_string().contains(&name), "{err}"),
            Ok(geo) => {
                for addr in [
                    "1.1.1.1",
                    "2.125.160.216",
                    "89.160.20.112",
                    "::1",
                    "2001:db8::1",
                ] {
                    let _ = geo.lookup(addr.parse().unwrap());
                }
            }
        }
    }
    assert!(tried >= 4, "{tried}");
}

#[test]
fn missing_file_names_the_path() {
    let sources = GeoSources {
        asn_db: Some(PathBuf::from("/nonexistent/GeoLite2-ASN.mmdb")),
        ..GeoSources::default()
    };
    let err = Geo::open(&sources).unwrap_err().to_string();
    assert!(err.contains("/nonexistent/GeoLite2-ASN.mmdb"), "{err}");
    assert!(err.contains(".mmdb"), "{err}");
}

#[test]
fn database_of_the_wrong_type_is_refused() {
    let sources = GeoSources {
        asn_db: Some(testdata("GeoLite2-City-Test.mmdb")),
        ..GeoSources::default()
    };
    let err = Geo::open(&sources).unwrap_err().to_string();
    assert!(err.starts_with("geoip.asn_db: "), "{err}");
    assert!(err.contains("is a GeoLite2-City database"), "{err}");
    assert!(err.contains("use a database of type ASN or ISP"), "{err}");
    let sources = GeoSources {
        anonymous_db: Some(testdata("GeoLite2-ASN-Test.mmdb")),
        ..GeoSources::default()
    };
    assert!(Geo::open(&sources).is_err());
    let sources = GeoSources {
        city_db: Some(testdata("GeoLite2-Country-Test.mmdb")),
        ..GeoSources::default()
    };
    assert!(Geo::open(&sources).is_ok());
}
