//! Client software as named by a User-Agent: its family and version.

/// Family and version of the first product in a User-Agent, such as
/// (`aws-cli`, `2.13.5`) for `aws-cli/2.13.5 Python/3.11.4 Linux/6.5`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Client {
    pub family: String,
    pub version: Option<String>,
}

/// Longest family or version kept; longer values are cut.
const MAX_PART: usize = 64;

impl Client {
    /// Reads the first product token. Brackets around the whole value (as
    /// some AWS SDKs send) are ignored, the family is lower-cased, and a
    /// random suffix after `_` (a run id or UUID) is dropped so that every
    /// run of the same tool is one family. Returns `None` for an empty value.
    pub fn parse(user_agent: &str) -> Option<Client> {
        let trimmed = user_agent
            .trim()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .trim();
        let product = trimmed.split_whitespace().next()?;
        let (name, version) = match product.split_once('/') {
            Some((name, version)) => (name, Some(version)),
            None => (product, None),
        };
        let name = match name.split_once('_') {
            Some((base, suffix)) if !base.is_empty() && looks_random(suffix) => base,
            _ => name,
        };
        if name.is_empty() {
            return None;
        }
        let family: String = name
            .chars()
            .take(MAX_PART)
            .collect::<String>()
            .to_lowercase();
        let version = version
            .filter(|version| !version.is_empty())
            .map(|version| version.chars().take(MAX_PART).collect());
        Some(Client { family, version })
    }

    /// `family/version`, or the family alone.
    pub fn label(&self) -> String {
        match &self.version {
            Some(version) => format!("{}/{version}", self.family),
            None => self.family.clone(),
        }
    }
}

fn looks_random(suffix: &str) -> bool {
    suffix.len() >= 8 && suffix.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(user_agent: &str) -> (String, Option<String>) {
        let client = Client::parse(user_agent).unwrap();
        (client.family, client.version)
    }

    #[test]
    fn reads_common_machine_clients() {
        let cases = [
            (
                "aws-cli/2.13.5 Python/3.11.4 Linux/6.5",
                "aws-cli",
                Some("2.13.5"),
            ),
            (
                "Boto3/1.34.69 md/Botocore#1.34.69 ua/2.0",
                "boto3",
                Some("1.34.69"),
            ),
            (
                "[aws-sdk-go/1.44.0 (go1.19; linux; amd64)]",
                "aws-sdk-go",
                Some("1.44.0"),
            ),
            ("curl/8.5.0", "curl", Some("8.5.0")),
            ("python-requests/2.31.0", "python-requests", Some("2.31.0")),
            ("console.amazonaws.com", "console.amazonaws.com", None),
            (
                "stratus-red-team_40d78cfa-a3da-48c3-9936-71c75ce30eab",
                "stratus-red-team",
                None,
            ),
            ("my_tool/1.0", "my_tool", Some("1.0")),
        ];
        for (user_agent, family, version) in cases {
            assert_eq!(
                parse(user_agent),
                (family.to_owned(), version.map(str::to_owned)),
                "{user_agent}"
            );
        }
    }

    #[test]
    fn empty_or_blank_is_no_client() {
        assert_eq!(Client::parse(""), None);
        assert_eq!(Client::parse("   "), None);
        assert_eq!(Client::parse("[]"), None);
        assert_eq!(Client::parse("/1.0"), None);
    }

    #[test]
    fn long_values_are_cut() {
        let long = format!("{}/{}", "a".repeat(500), "1".repeat(500));
        let client = Client::parse(&long).unwrap();
        assert_eq!(client.family.len(), MAX_PART);
        assert_eq!(client.version.unwrap().len(), MAX_PART);
    }
}
