use super::*;

const MINIMAL: &str = r#"
[gateway]
listen = "127.0.0.1:8080"
data_dir = "./stepgate-data"
trusted_proxies = []

[[routes]]
prefix = "/"
upstream = "http://127.0.0.1:9000"

[[zones]]
name = "reports"
prefix = "/reports"
read_only = true

[risk]
learning_requests = 5
"#;

fn message(text: &str) -> String {
    Config::parse(text, "test.toml").unwrap_err().to_string()
}

#[test]
fn documented_keys_parse() {
    let config = Config::parse(MINIMAL, "test.toml").unwrap();
    assert_eq!(config.gateway.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(config.routes[0].upstream, "http://127.0.0.1:9000");
    assert!(config.zones[0].read_only);
    assert_eq!(config.risk.learning_requests, 5);
    assert_eq!(config.gateway.identity_header, "Stepgate-Identity");
}

#[test]
fn embedded_defaults_are_valid() {
    let config = Config::embedded().unwrap();
    assert!(config.echo.is_some());
    assert_eq!(config.step_up.max_age_secs, 300);
}

#[test]
fn unknown_key_is_named() {
    let text = MINIMAL.replace("learning_requests = 5", "learning_requets = 5");
    let err = message(&text);
    assert!(err.contains("learning_requets"), "{err}");
    assert!(err.contains("test.toml"), "{err}");
}

#[test]
fn bad_trusted_proxy_names_key_and_value() {
    let text = MINIMAL.replace(
        "trusted_proxies = []",
        r#"trusted_proxies = ["10.0.0.0/8", "nonsense"]"#,
    );
    let err = message(&text);
    assert!(err.contains("gateway.trusted_proxies[1]"), "{err}");
    assert!(err.contains("\"nonsense\""), "{err}");
}

#[test]
fn trusted_proxies_accept_addresses_and_ranges() {
    let text = MINIMAL.replace(
        "trusted_proxies = []",
        r#"trusted_proxies = ["10.1.2.3/8", "::1"]"#,
    );
    let config = Config::parse(&text, "t").unwrap();
    assert_eq!(config.trusted_proxy_nets[0].to_string(), "10.0.0.0/8");
    assert_eq!(config.trusted_proxy_nets[1].to_string(), "::1/128");
}

#[test]
fn bad_upstream_names_route() {
    let text = MINIMAL.replace("http://127.0.0.1:9000", "ftp://x");
    let err = message(&text);
    assert!(err.contains("routes[0].upstream"), "{err}");
    assert!(err.contains("ftp://x"), "{err}");
}

#[test]
fn bad_listen_address_named() {
    let text = MINIMAL.replace("127.0.0.1:8080", "localhost:notaport");
    let err = message(&text);
    assert!(err.contains("listen"), "{err}");
}

#[test]
fn weight_over_100_rejected() {
    let text = format!("{MINIMAL}\n[risk.weights]\nnew_network = 101\n");
    let text = text.replace("[risk]\nlearning_requests = 5\n", "");
    let err = message(&format!("{text}\n[risk]\nlearning_requests = 5\n"));
    assert!(err.contains("risk.weights.new_network"), "{err}");
}

#[test]
fn broken_toml_reports_position() {
    let err = message("[gateway\nlisten = ");
    assert!(err.contains("line 1"), "{err}");
}

#[test]
fn duplicate_zone_names_rejected() {
    let text = format!("{MINIMAL}\n[[zones]]\nname = \"reports\"\nprefix = \"/r2\"\n");
    assert!(message(&text).contains("zones[1].name"));
}

#[test]
fn semantic_mistakes_named() {
    let clash = format!("{MINIMAL}\n[admin]\nlisten = \"127.0.0.1:8080\"\n");
    let err = message(&clash);
    assert!(
        err.contains("admin.listen") && err.contains("gateway.listen"),
        "{err}"
    );

    let header = MINIMAL.replace(
        "trusted_proxies = []",
        "trusted_proxies = []\nidentity_header = \"Authorization\"",
    );
    assert!(message(&header).contains("gateway.identity_header"));

    let host = MINIMAL.replace(
        "upstream = \"http://127.0.0.1:9000\"",
        "upstream = \"http://127.0.0.1:9000\"\nhost = \"api.example.com:8080\"",
    );
    assert!(message(&host).contains("routes[0].host"));

    let zone = MINIMAL.replace("prefix = \"/reports\"", "prefix = \"/x/../reports\"");
    assert!(message(&zone).contains("zones[0].prefix"));

    let lockout = format!("{MINIMAL}\n[step_up]\ntotp_lockout_secs = 0\n");
    assert!(message(&lockout).contains("step_up.totp_lockout_secs"));

    let huge = format!("{MINIMAL}\n[step_up]\nmax_age_secs = 18446744073709551615\n");
    assert!(message(&huge).contains("step_up.max_age_secs"));
}

#[test]
fn ipv4_mapped_ranges_become_ipv4() {
    let text = format!(
        "{MINIMAL}\n[geoip]\nhosting_networks = [\"::ffff:203.0.113.0/120\", \"::ffff:198.51.100.7\"]\n"
    );
    let config = Config::parse(&text, "test.toml").unwrap();
    let nets: Vec<String> = config
        .geoip
        .hosting_nets
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(nets, ["203.0.113.0/24", "198.51.100.7/32"]);
}

#[test]
fn empty_geoip_path_is_rejected() {
    let text = format!("{MINIMAL}\n[geoip]\nasn_db = \"\"\n");
    let err = Config::parse(&text, "test.toml").unwrap_err().to_string();
    assert!(err.contains("geoip.asn_db"), "{err}");
    assert!(err.contains("give the path of a .mmdb file"), "{err}");
}

#[test]
fn weight_above_255_gets_the_range_message() {
    let text = format!("{MINIMAL}\n[risk.weights]\nnew_network = 300\n");
    let err = Config::parse(&text, "test.toml").unwrap_err().to_string();
    assert!(
        err.contains("risk.weights.new_network = 300 is above 100"),
        "{err}"
    );
}
