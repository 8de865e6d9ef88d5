//! The cluster's PKI: a CA made on the master's first start and kept in its data directory,
//! certificates issued from it (API serving, admin client, master and node identities), the
//! CA hash nodes pin when they join, and bootstrap tokens.

use std::fs;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use sha2::{Digest, Sha256};

/// PKI failures.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("cannot read or write {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("invalid PEM in {0}")]
    Pem(String),
    #[error("invalid certificate: {0}")]
    Certificate(String),
}

fn read(path: &Path) -> Result<String, PkiError> {
    fs::read_to_string(path).map_err(|source| PkiError::Io {
        path: path.to_owned(),
        source,
    })
}

fn write_private(path: &Path, contents: &str) -> Result<(), PkiError> {
    let io = |source| PkiError::Io {
        path: path.to_owned(),
        source,
    };
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(io)?;
    }
    fs::write(path, contents).map_err(io)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(path, fs::Permissions::from_mode(0o600)).map_err(io)?;
    }
    Ok(())
}

/// A certificate and its private key, as PEM.
#[derive(Clone, Debug)]
pub struct CertPair {
    pub cert_pem: String,
    pub key_pem: String,
}

impl CertPair {
    /// Loads `<base>.crt` and `<base>.key`.
    pub fn load(base: &Path) -> Result<CertPair, PkiError> {
        Ok(CertPair {
            cert_pem: read(&base.with_extension("crt"))?,
            key_pem: read(&base.with_extension("key"))?,
        })
    }

    /// Saves `<base>.crt` and `<base>.key` (the key readable by its owner only).
    pub fn save(&self, base: &Path) -> Result<(), PkiError> {
        write_private(&base.with_extension("crt"), &self.cert_pem)?;
        write_private(&base.with_extension("key"), &self.key_pem)
    }

    /// The certificate as DER.
    pub fn cert_der(&self) -> Result<CertificateDer<'static>, PkiError> {
        cert_der(&self.cert_pem)
    }

    /// The key as DER.
    pub fn key_der(&self) -> Result<PrivateKeyDer<'static>, PkiError> {
        PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes())
            .map_err(|_| PkiError::Pem("private key".into()))
    }
}

/// The first certificate in a PEM text, as DER.
pub fn cert_der(pem: &str) -> Result<CertificateDer<'static>, PkiError> {
    CertificateDer::from_pem_slice(pem.as_bytes()).map_err(|_| PkiError::Pem("certificate".into()))
}

/// `sha256:<hex>` of the certificate's SubjectPublicKeyInfo, the form `kubeadm join
/// --discovery-token-ca-cert-hash` uses.
pub fn ca_cert_hash(cert: &CertificateDer<'_>) -> Result<String, PkiError> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref())
        .map_err(|e| PkiError::Certificate(e.to_string()))?;
    let spki = parsed.tbs_certificate.subject_pki.raw;
    Ok(format!("sha256:{}", hex::encode(Sha256::digest(spki))))
}

/// The common name of a certificate.
pub fn common_name(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    parsed
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_owned)
}

/// The organizations (Kubernetes groups) a certificate's subject names.
pub fn organizations(cert: &CertificateDer<'_>) -> Vec<String> {
    let Ok((_, parsed)) = x509_parser::parse_x509_certificate(cert.as_ref()) else {
        return Vec::new();
    };
    parsed
        .subject()
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_owned))
        .collect()
}

/// The group every master's peer certificate carries; Raft traffic is accepted only from it.
pub const MASTERS_GROUP: &str = "shoal:masters";

/// What a certificate is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Usage {
    Server,
    Client,
    /// Both: cluster members are servers and clients of each other.
    Peer,
}

fn leaf_params(
    cn: &str,
    orgs: &[&str],
    sans: &[String],
    usage: Usage,
) -> Result<CertificateParams, PkiError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.subject_alt_names = sans
        .iter()
        .map(|s| match s.parse::<std::net::IpAddr>() {
            Ok(ip) => Ok(SanType::IpAddress(ip)),
            Err(_) => Ok(SanType::DnsName(s.clone().try_into()?)),
        })
        .collect::<Result<Vec<_>, rcgen::Error>>()?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    for org in orgs {
        dn.push(DnType::OrganizationName, *org);
    }
    params.distinguished_name = dn;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = match usage {
        Usage::Server => vec![ExtendedKeyUsagePurpose::ServerAuth],
        Usage::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
        Usage::Peer => vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
    };
    let now = time_now();
    params.not_before = now - rcgen_duration_days(1);
    params.not_after = now + rcgen_duration_days(3650);
    Ok(params)
}

fn time_now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

fn rcgen_duration_days(days: i64) -> time::Duration {
    time::Duration::days(days)
}

/// The cluster CA: it signs every certificate in the cluster.
pub struct ClusterCa {
    pair: CertPair,
    key: KeyPair,
}

impl ClusterCa {
    /// Loads the CA from `dir/ca.{crt,key}`, or makes and saves a new one.
    pub fn load_or_create(dir: &Path) -> Result<ClusterCa, PkiError> {
        let base = dir.join("ca");
        if base.with_extension("crt").exists() {
            let pair = CertPair::load(&base)?;
            let key = KeyPair::from_pem(&pair.key_pem)?;
            return Ok(ClusterCa { pair, key });
        }
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "shoal-ca");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = time_now();
        params.not_before = now - rcgen_duration_days(1);
        params.not_after = now + rcgen_duration_days(3650);
        let cert = params.self_signed(&key)?;
        let pair = CertPair {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        };
        pair.save(&base)?;
        Ok(ClusterCa { pair, key })
    }

    /// Saves a CA received from another master as `dir/ca.{crt,key}`, so that
    /// [`ClusterCa::load_or_create`] loads it.
    pub fn install(dir: &Path, pair: &CertPair) -> Result<(), PkiError> {
        KeyPair::from_pem(&pair.key_pem)?;
        pair.save(&dir.join("ca"))
    }

    /// The CA's certificate and private key (PEM), which every master holds.
    pub fn pair(&self) -> &CertPair {
        &self.pair
    }

    /// The CA certificate (PEM).
    pub fn cert_pem(&self) -> &str {
        &self.pair.cert_pem
    }

    /// The CA certificate (DER).
    pub fn cert_der(&self) -> Result<CertificateDer<'static>, PkiError> {
        self.pair.cert_der()
    }

    /// The hash nodes pin when joining.
    pub fn hash(&self) -> Result<String, PkiError> {
        ca_cert_hash(&self.cert_der()?)
    }

    fn issuer(&self) -> Result<Issuer<'_, &KeyPair>, PkiError> {
        Ok(Issuer::from_ca_cert_pem(&self.pair.cert_pem, &self.key)?)
    }

    /// Issues a certificate with a fresh key.
    pub fn issue(
        &self,
        cn: &str,
        orgs: &[&str],
        sans: &[String],
        usage: Usage,
    ) -> Result<CertPair, PkiError> {
        let key = KeyPair::generate()?;
        let cert = leaf_params(cn, orgs, sans, usage)?.signed_by(&key, &self.issuer()?)?;
        Ok(CertPair {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Loads `dir/<name>.{crt,key}` or issues and saves it.
    pub fn load_or_issue(
        &self,
        dir: &Path,
        name: &str,
        cn: &str,
        orgs: &[&str],
        sans: &[String],
        usage: Usage,
    ) -> Result<CertPair, PkiError> {
        let base = dir.join(name);
        if base.with_extension("crt").exists() {
            return CertPair::load(&base);
        }
        let pair = self.issue(cn, orgs, sans, usage)?;
        pair.save(&base)?;
        Ok(pair)
    }

    /// Signs a node's certificate request. The subject is ours to set: the common name is
    /// `node_name`, whatever the request says, so a certificate names exactly one node.
    pub fn sign_request(
        &self,
        csr_pem: &str,
        node_name: &str,
        orgs: &[&str],
    ) -> Result<String, PkiError> {
        let mut csr = CertificateSigningRequestParams::from_pem(csr_pem)?;
        let sans = vec![node_name.to_owned()];
        csr.params = leaf_params(node_name, orgs, &sans, Usage::Peer)?;
        Ok(csr.signed_by(&self.issuer()?)?.pem())
    }
}

/// A key and a certificate request for `name`, made on the joining side.
pub fn certificate_request(name: &str) -> Result<(String, String), PkiError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(vec![name.to_owned()])?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    params.distinguished_name = dn;
    let csr = params.serialize_request(&key)?;
    Ok((key.serialize_pem(), csr.pem()?))
}

/// A bootstrap token in kubeadm's form, `[a-z0-9]{6}.[a-z0-9]{16}`.
pub fn new_bootstrap_token() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    let mut part = |n: usize| -> String {
        (0..n)
            .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
            .collect()
    };
    let id = part(6);
    let secret = part(16);
    format!("{id}.{secret}")
}

/// Loads `dir/bootstrap-token` or makes and saves one.
pub fn load_or_create_token(dir: &Path) -> Result<String, PkiError> {
    let path = dir.join("bootstrap-token");
    if path.exists() {
        return Ok(read(&path)?.trim().to_owned());
    }
    let token = new_bootstrap_token();
    write_private(&path, &token)?;
    Ok(token)
}

/// Saves a bootstrap token received from another master.
pub fn install_token(dir: &Path, token: &str) -> Result<(), PkiError> {
    write_private(&dir.join("bootstrap-token"), token)
}

/// Compares two secrets in time independent of where they differ.
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("shoal-pki-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn the_ca_is_kept_across_restarts() {
        let dir = temp("ca");
        let first = ClusterCa::load_or_create(&dir).expect("create");
        let again = ClusterCa::load_or_create(&dir).expect("load");
        assert_eq!(first.hash().expect("hash"), again.hash().expect("hash"));
        assert!(first.hash().expect("hash").starts_with("sha256:"));
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn a_signed_request_names_the_node_whatever_it_asked() {
        let dir = temp("csr");
        let ca = ClusterCa::load_or_create(&dir).expect("create");
        let (_key, csr) = certificate_request("impostor").expect("csr");
        let cert = ca
            .sign_request(&csr, "node-a", &["system:nodes"])
            .expect("sign");
        assert_eq!(
            common_name(&cert_der(&cert).expect("der")).as_deref(),
            Some("node-a")
        );
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn tokens_have_kubeadm_shape() {
        let t = new_bootstrap_token();
        let (id, secret) = t.split_once('.').expect("dot");
        assert_eq!((id.len(), secret.len()), (6, 16));
        assert!(constant_time_eq(&t, &t.clone()));
        assert!(!constant_time_eq(&t, "abcdef.0123456789abcdef"));
    }
}
