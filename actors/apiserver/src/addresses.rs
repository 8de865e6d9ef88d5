//! Service addresses and node ports, allocated as Kubernetes allocates them: a cluster IP
//! from the service range (`--service-cidr`, 10.96.0.0/12 by default) for every Service but
//! headless and ExternalName ones, and a node port (30000–32767) for each port of a NodePort
//! or LoadBalancer Service. Each address or port is claimed by creating a key of its own in
//! the store, so two API servers can never hand out the same one; deleting the Service
//! frees them.

use std::net::Ipv4Addr;
use std::ops::RangeInclusive;
use std::str::FromStr;

use serde_json::{Map, Value, json};
use shoal_core::ApiError;
use shoal_core::error::FieldCause;
use shoal_store::{StoreError, WriteOp};

use crate::core::{ApiCore, WriteCtx};
use crate::kinds::network::{wants_cluster_ip, wants_node_ports};
use crate::kinds::str_at;
use crate::resources::ResourceInfo;
use crate::validate::subject;

/// Where the claims live: a group no resource is served from, so no list ever sees them.
const CLAIMS: &str = "/internal.shoal.io";

/// Addresses below this offset are handed out only when asked for by name (as Kubernetes
/// keeps the low band for static addresses such as the DNS service's).
const STATIC_BAND: u32 = 16;

/// An IPv4 range in CIDR notation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    base: u32,
    prefix: u8,
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Cidr, String> {
        let (ip, prefix) = text
            .split_once('/')
            .ok_or_else(|| format!("{text:?} is not in CIDR notation (a.b.c.d/n)"))?;
        let ip: Ipv4Addr = ip
            .parse()
            .map_err(|e| format!("{text:?} has a bad address: {e}"))?;
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| (1..=30).contains(p))
            .ok_or_else(|| format!("{text:?} needs a prefix length from 1 to 30"))?;
        let mask = u32::MAX << (32 - prefix);
        Ok(Cidr {
            base: u32::from(ip) & mask,
            prefix,
        })
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.base), self.prefix)
    }
}

impl Cidr {
    /// How many addresses the range holds.
    fn size(&self) -> u32 {
        1u32 << (32 - self.prefix)
    }

    /// Whether `ip` is a host address of the range (not its network or broadcast address).
    pub fn holds(&self, ip: Ipv4Addr) -> bool {
        let offset = u32::from(ip).wrapping_sub(self.base);
        u32::from(ip) >= self.base && offset > 0 && offset < self.size() - 1
    }

    fn at(&self, offset: u32) -> Ipv4Addr {
        Ipv4Addr::from(self.base + offset)
    }
}

/// The ranges Services are given addresses and node ports from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceRanges {
    pub cidr: Cidr,
    pub node_ports: RangeInclusive<u16>,
}

impl Default for ServiceRanges {
    fn default() -> ServiceRanges {
        ServiceRanges {
            cidr: Cidr {
                base: u32::from(Ipv4Addr::new(10, 96, 0, 0)),
                prefix: 12,
            },
            node_ports: 30000..=32767,
        }
    }
}

/// The order in which dynamic addresses are tried: from a random point of the range above
/// the static band, around once.
fn address_order(cidr: Cidr, start: u32) -> impl Iterator<Item = Ipv4Addr> {
    let first = STATIC_BAND.min(cidr.size() / 2).max(1);
    let span = cidr.size() - 1 - first;
    (0..span).map(move |i| cidr.at(first + (start + i) % span))
}

/// The order in which node ports are tried, from a random point, around once.
fn port_order(range: RangeInclusive<u16>, start: u32) -> impl Iterator<Item = u16> {
    let low = u32::from(*range.start());
    let span = u32::from(*range.end()) + 1 - low;
    // Each value is below the range's end, a u16.
    (0..span).map(move |i| (low + (start + i) % span) as u16)
}

fn random() -> u32 {
    // The first four bytes of a v4 UUID are random.
    let bytes = uuid::Uuid::new_v4().into_bytes();
    u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
}

fn ip_key(ip: Ipv4Addr) -> String {
    format!("{CLAIMS}/serviceips/{ip}")
}

fn port_key(port: u16) -> String {
    format!("{CLAIMS}/nodeports/{port}")
}

/// The most dynamic candidates tried before the range is called full.
const TRIES: usize = 64;

/// Copies what a Service update leaves out but was allocated before (its addresses and
/// node ports), as Kubernetes does, so that `kubectl replace` of a file without them works.
pub fn keep_allocated(old: &Value, new: &mut Map<String, Value>) {
    let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let ty = spec
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP")
        .to_owned();
    if ty != "ExternalName" && spec.get("clusterIP").is_none_or(|v| v == "") {
        for field in ["clusterIP", "clusterIPs"] {
            if let Some(v) = old.pointer(&format!("/spec/{field}")) {
                spec.insert(field.into(), v.clone());
            }
        }
    }
    if !matches!(ty.as_str(), "NodePort" | "LoadBalancer") {
        return;
    }
    let old_ports = old
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if let Some(Value::Array(ports)) = spec.get_mut("ports") {
        for port in ports.iter_mut().filter_map(Value::as_object_mut) {
            if port.get("nodePort").is_some_and(|v| v.as_i64() != Some(0)) {
                continue;
            }
            let same = old_ports.iter().find(|o| {
                o.get("port") == port.get("port")
                    && str_at(o, "/protocol")
                        == port
                            .get("protocol")
                            .and_then(Value::as_str)
                            .unwrap_or("TCP")
            });
            if let Some(node_port) = same.and_then(|o| o.get("nodePort")) {
                port.insert("nodePort".into(), node_port.clone());
            }
        }
    }
}

/// The claims a stored Service holds.
pub(crate) fn claims_of(service: &Value) -> Vec<String> {
    let mut keys = Vec::new();
    let spec = service.get("spec").unwrap_or(&Value::Null);
    for ip in spec
        .get("clusterIPs")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        if let Ok(ip) = ip.parse() {
            keys.push(ip_key(ip));
        }
    }
    for port in spec
        .get("ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|p| p.get("nodePort").and_then(Value::as_u64))
        .filter_map(|p| u16::try_from(p).ok())
    {
        let key = port_key(port);
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    keys
}

impl ApiCore {
    /// Claims `key` for `owner`: false when another holds it.
    async fn claim(&self, key: &str, owner: &str, ctx: &WriteCtx) -> Result<bool, ApiError> {
        let op = WriteOp::Create {
            key: key.to_owned(),
            value: owner.as_bytes().to_vec(),
        };
        match self.commit(op, ctx).await {
            Ok(_) => Ok(true),
            Err(StoreError::AlreadyExists(_)) => Ok(false),
            Err(err) => Err(ApiError::Internal(format!("claiming {key}: {err}"))),
        }
    }

    /// Frees claims (a Service's, once it is gone or its create failed).
    pub(crate) async fn release(&self, keys: &[String], ctx: &WriteCtx) {
        for key in keys {
            let op = WriteOp::Delete {
                key: key.clone(),
                expected: None,
            };
            match self.commit(op, ctx).await {
                Ok(_) | Err(StoreError::NotFound(_)) => {}
                Err(err) => tracing::warn!(%key, reason = %err, "a service claim was not freed"),
            }
        }
    }

    /// Frees what a deleted Service held.
    pub(crate) async fn release_service(&self, service: &Value, ctx: &WriteCtx) {
        if !ctx.dry_run {
            self.release(&claims_of(service), ctx).await;
        }
    }

    /// Gives a Service being written the addresses and node ports it lacks, claiming each;
    /// returns the new claims (to free if the write fails). `old` is the stored Service of
    /// an update, whose claims are kept.
    pub(crate) async fn allocate(
        &self,
        info: &ResourceInfo,
        name: &str,
        owner: &str,
        service: &mut Map<String, Value>,
        old: Option<&Value>,
        ctx: &WriteCtx,
    ) -> Result<Vec<String>, ApiError> {
        let held = old.map(claims_of).unwrap_or_default();
        let mut claimed = Vec::new();
        let result = self
            .allocate_into(info, name, owner, service, &held, &mut claimed, ctx)
            .await;
        match result {
            Ok(()) => Ok(claimed),
            Err(err) => {
                self.release(&claimed, ctx).await;
                Err(err)
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn allocate_into(
        &self,
        info: &ResourceInfo,
        name: &str,
        owner: &str,
        service: &mut Map<String, Value>,
        held: &[String],
        claimed: &mut Vec<String>,
        ctx: &WriteCtx,
    ) -> Result<(), ApiError> {
        let ranges = self.ranges().clone();
        let invalid = |field: &str, value: &Value, why: String| {
            ApiError::Invalid(
                subject(info, name),
                vec![FieldCause {
                    reason: "FieldValueInvalid",
                    field: field.into(),
                    message: format!("Invalid value: {value}: {why}"),
                }],
            )
        };
        let spec_value = Value::Object(
            service
                .get("spec")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default(),
        );
        let Some(spec) = service.get_mut("spec").and_then(Value::as_object_mut) else {
            return Ok(());
        };
        if wants_cluster_ip(&spec_value) {
            let asked = spec
                .get("clusterIP")
                .and_then(Value::as_str)
                .filter(|ip| !ip.is_empty())
                .map(str::to_owned);
            let ip = match asked {
                Some(text) => {
                    let ip: Ipv4Addr = text.parse().map_err(|_| {
                        invalid(
                            "spec.clusterIPs",
                            &json!([text]),
                            "must be a valid IP address".into(),
                        )
                    })?;
                    let key = ip_key(ip);
                    if !held.contains(&key) {
                        if !ranges.cidr.holds(ip) {
                            return Err(invalid(
                                "spec.clusterIPs",
                                &json!([text]),
                                format!(
                                    "failed to allocate IP {ip}: the provided IP ({ip}) is not in the valid range. The range of valid IPs is {}",
                                    ranges.cidr
                                ),
                            ));
                        }
                        if !ctx.dry_run && !self.claim(&key, owner, ctx).await? {
                            return Err(invalid(
                                "spec.clusterIPs",
                                &json!([text]),
                                format!(
                                    "failed to allocate IP {ip}: provided IP is already allocated"
                                ),
                            ));
                        }
                        claimed.push(key);
                    }
                    ip
                }
                None => {
                    let mut found = None;
                    for ip in address_order(ranges.cidr, random()).take(TRIES) {
                        if ctx.dry_run || self.claim(&ip_key(ip), owner, ctx).await? {
                            claimed.push(ip_key(ip));
                            found = Some(ip);
                            break;
                        }
                    }
                    found.ok_or_else(|| {
                        ApiError::Internal(format!(
                            "failed to allocate a serviceIP: range {} is full",
                            ranges.cidr
                        ))
                    })?
                }
            };
            spec.insert("clusterIP".into(), json!(ip.to_string()));
            spec.insert("clusterIPs".into(), json!([ip.to_string()]));
        } else if str_at(&spec_value, "/clusterIP") == "None" {
            spec.insert("clusterIPs".into(), json!(["None"]));
        }
        if !wants_node_ports(&spec_value) {
            return Ok(());
        }
        let Some(Value::Array(ports)) = spec.get_mut("ports") else {
            return Ok(());
        };
        for (i, port) in ports.iter_mut().enumerate() {
            let Some(port) = port.as_object_mut() else {
                continue;
            };
            let field = format!("spec.ports[{i}].nodePort");
            let asked = port
                .get("nodePort")
                .and_then(Value::as_i64)
                .filter(|p| *p != 0);
            let chosen = match asked {
                Some(n) => {
                    let number = u16::try_from(n)
                        .ok()
                        .filter(|p| ranges.node_ports.contains(p))
                        .ok_or_else(|| {
                            invalid(&field, &json!(n), format!(
                                "provided port is not in the valid range. The range of valid ports is {}-{}",
                                ranges.node_ports.start(),
                                ranges.node_ports.end()
                            ))
                        })?;
                    let key = port_key(number);
                    if !held.contains(&key) && !claimed.contains(&key) {
                        if !ctx.dry_run && !self.claim(&key, owner, ctx).await? {
                            return Err(invalid(
                                &field,
                                &json!(n),
                                "provided port is already allocated".into(),
                            ));
                        }
                        claimed.push(key);
                    }
                    number
                }
                None => {
                    let mut found = None;
                    for number in port_order(ranges.node_ports.clone(), random()).take(TRIES) {
                        let key = port_key(number);
                        if held.contains(&key) || claimed.contains(&key) {
                            continue;
                        }
                        if ctx.dry_run || self.claim(&key, owner, ctx).await? {
                            claimed.push(key);
                            found = Some(number);
                            break;
                        }
                    }
                    found.ok_or_else(|| {
                        ApiError::Internal(
                            "failed to allocate a nodePort: the range is full".into(),
                        )
                    })?
                }
            };
            port.insert("nodePort".into(), json!(chosen));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_and_hold_only_host_addresses() {
        let cidr: Cidr = "10.96.0.0/12".parse().expect("valid");
        assert_eq!(cidr, ServiceRanges::default().cidr);
        assert!(cidr.holds(Ipv4Addr::new(10, 96, 0, 1)));
        assert!(cidr.holds(Ipv4Addr::new(10, 111, 255, 254)));
        assert!(!cidr.holds(Ipv4Addr::new(10, 96, 0, 0)));
        assert!(!cidr.holds(Ipv4Addr::new(10, 111, 255, 255)));
        assert!(!cidr.holds(Ipv4Addr::new(10, 112, 0, 1)));
        assert!(!cidr.holds(Ipv4Addr::new(9, 0, 0, 1)));
        let odd: Cidr = "192.168.7.9/24".parse().expect("valid");
        assert_eq!(odd.to_string(), "192.168.7.0/24");
        for bad in [
            "10.96.0.0",
            "10.96.0.0/0",
            "10.96.0.0/31",
            "10.96.0/12",
            "x/8",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn dynamic_addresses_skip_the_static_band_and_cover_the_range_once() {
        let cidr: Cidr = "10.0.0.0/24".parse().expect("valid");
        let all: Vec<Ipv4Addr> = address_order(cidr, 1000).collect();
        assert_eq!(all.len(), 256 - 1 - 16);
        let unique: std::collections::BTreeSet<_> = all.iter().collect();
        assert_eq!(unique.len(), all.len());
        assert!(all.iter().all(|ip| cidr.holds(*ip)));
        assert!(all.iter().all(|ip| ip.octets()[3] >= 16));
        let ports: Vec<u16> = port_order(30000..=30009, 7).collect();
        assert_eq!(ports[0], 30007);
        assert_eq!(ports.len(), 10);
        assert!(ports.contains(&30000) && ports.contains(&30009));
    }

    #[test]
    fn an_update_keeps_what_was_allocated() {
        let old = json!({"spec": {"type": "NodePort", "clusterIP": "10.96.0.20", "clusterIPs": ["10.96.0.20"],
            "ports": [{"port": 80, "protocol": "TCP", "nodePort": 30080}]}});
        let mut new = json!({"spec": {"type": "NodePort", "ports": [{"port": 80, "protocol": "TCP"}, {"port": 81, "protocol": "TCP"}]}});
        keep_allocated(&old, new.as_object_mut().expect("object"));
        assert_eq!(new["spec"]["clusterIP"], "10.96.0.20");
        assert_eq!(new["spec"]["ports"][0]["nodePort"], 30080);
        assert!(new["spec"]["ports"][1].get("nodePort").is_none());
        assert_eq!(
            claims_of(&old),
            vec![ip_key(Ipv4Addr::new(10, 96, 0, 20)), port_key(30080)]
        );
    }
}
