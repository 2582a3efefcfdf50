//! A test CA and a server certificate signed by it, made with `openssl`.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::process::run;

/// The TLS files of a server started with [`Options::tls`](crate::Options::tls).
///
/// The CA and the server certificate are ECDSA P-384 certificates signed
/// with SHA-384, valid for two days. SCRAM's `tls-server-end-point` channel
/// binding therefore hashes the server certificate with SHA-384, not the
/// SHA-256 that most certificates get. The server certificate's subject
/// alternative names are `DNS:localhost` and `IP:127.0.0.1`.
#[derive(Clone, Debug)]
pub struct Certificates {
    /// The CA certificate in PEM, for a client's `sslrootcert`.
    pub ca_cert_pem: PathBuf,
    /// The CA certificate in DER.
    pub ca_der: Vec<u8>,
    /// The CA's private key in PEM, for signing more certificates with the
    /// same CA.
    pub ca_key: PathBuf,
    /// The server certificate in PEM, the server's `ssl_cert_file`.
    pub server_cert: PathBuf,
    /// The server's private key in PEM, the server's `ssl_key_file`.
    pub server_key: PathBuf,
}

/// Makes the CA and the server certificate in `folder`. Under root the
/// server's files are given to `run_as`, because the server rejects a key
/// file that it does not own or that others can read.
pub(crate) fn make_certificates(folder: &Path, run_as: Option<&str>) -> Certificates {
    let path = |name: &str| folder.join(name);
    let openssl = |args: &[&str]| {
        run(Command::new("openssl").current_dir(folder).args(args));
    };
    let new_key = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-384",
        "-nodes",
    ];

    openssl(
        &[
            &["req", "-x509", "-new", "-sha384", "-days", "2"][..],
            &new_key,
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-subj",
                "/CN=stepgate test CA",
            ],
        ]
        .concat(),
    );
    openssl(
        &[
            &["req", "-new"][..],
            &new_key,
            &[
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=localhost",
            ],
        ]
        .concat(),
    );
    std::fs::write(
        path("server.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap_or_else(|error| panic!("writing server.ext failed: {error}"));
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-sha384",
        "-days",
        "2",
        "-extfile",
        "server.ext",
        "-out",
        "server.pem",
    ]);
    openssl(&["x509", "-in", "ca.pem", "-outform", "DER", "-out", "ca.der"]);

    if let Some(user) = run_as {
        run(Command::new("chown")
            .arg(user)
            .arg(path("server.key"))
            .arg(path("server.pem")));
    }
    run(Command::new("chmod").arg("600").arg(path("server.key")));

    let ca_der = std::fs::read(path("ca.der"))
        .unwrap_or_else(|error| panic!("reading ca.der failed: {error}"));
    Certificates {
        ca_cert_pem: path("ca.pem"),
        ca_der,
        ca_key: path("ca.key"),
        server_cert: path("server.pem"),
        server_key: path("server.key"),
    }
}
