//! The admin kubeconfig the master writes, like `kubeadm` writes `admin.conf`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::json;

/// A kubeconfig for `server` that trusts `ca_pem` and authenticates with a client certificate.
pub fn admin_kubeconfig(server: &str, ca_pem: &str, cert_pem: &str, key_pem: &str) -> String {
    let config = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "shoal", "cluster": {"server": server, "certificate-authority-data": STANDARD.encode(ca_pem)}}],
        "users": [{"name": "shoal-admin", "user": {
            "client-certificate-data": STANDARD.encode(cert_pem),
            "client-key-data": STANDARD.encode(key_pem),
        }}],
        "contexts": [{"name": "shoal-admin@shoal", "context": {"cluster": "shoal", "user": "shoal-admin"}}],
        "current-context": "shoal-admin@shoal",
        "preferences": {},
    });
    serde_yaml::to_string(&config).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kubeconfig_names_its_context_and_embeds_credentials() {
        let text = admin_kubeconfig("https://127.0.0.1:6443", "CA", "CERT", "KEY");
        let parsed: serde_json::Value = serde_yaml::from_str(&text).expect("yaml");
        assert_eq!(parsed["current-context"], "shoal-admin@shoal");
        assert_eq!(
            parsed["clusters"][0]["cluster"]["server"],
            "https://127.0.0.1:6443"
        );
        assert_eq!(
            parsed["users"][0]["user"]["client-key-data"],
            STANDARD.encode("KEY")
        );
    }
}
