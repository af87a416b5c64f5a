//! NetworkPolicy ports: numbers, ranges and names, checked as the API server checks them. Only
//! TCP reaches the proxy, so UDP and SCTP entries allow nothing here. A named port resolves,
//! as in Kubernetes, on the pod the rule protects: for ingress the workload's own container
//! ports (name *and* protocol must match); for egress the destination pod's, which a sidecar
//! alone cannot know, so there it matches nothing, with a warning — unless the cluster is known,
//! and each destination pod resolves the name itself ([`Ports::egress_names`]).

use super::apivalidation::port_name;
use crate::compiled::CompileContext;
use crate::diagnostics::Diagnostics;
use crate::matchers::PortSet;
use crate::model::{self, PortValue, Spanned};

const PORT_RANGE: &str = "must be between 1 and 65535, inclusive";

fn number(d: &mut Diagnostics<'_>, at: &Spanned<impl Sized>, n: i64, field: &str) -> Option<u16> {
    match u16::try_from(n) {
        Ok(p) if p > 0 => Some(p),
        _ => {
            d.error(at, format!("{field}: Invalid value: {n}: {PORT_RANGE}"));
            None
        }
    }
}

/// Resolves a named port for the given protocol (`None`: it matches nothing here).
fn named(
    d: &mut Diagnostics<'_>,
    at: &Spanned<PortValue>,
    name: &str,
    proto: &str,
    inbound: bool,
    ctx: &CompileContext,
) -> Option<u16> {
    if !inbound {
        if ctx.cluster.is_none() {
            d.warn(at, format!("named port {name:?} in an egress rule names a port of the destination pod, which a sidecar cannot know; it matches nothing (use the port number)"));
        }
        return None;
    }
    match ctx.named_ports.get(name) {
        Some(p) if p.protocol == proto => Some(p.port),
        Some(p) => {
            d.warn(at, format!("named port {name:?} is a {} port of this workload, not {proto}; it matches nothing", p.protocol));
            None
        }
        None => {
            d.warn(at, format!("named port {name:?} is not a container port of this workload; it matches nothing"));
            None
        }
    }
}

/// One port entry as a range; `None` when it is invalid or matches nothing here.
fn one(
    d: &mut Diagnostics<'_>,
    p: &Spanned<model::NetPort>,
    proto: &str,
    inbound: bool,
    ctx: &CompileContext,
) -> Option<(u16, u16)> {
    let port = &p.value;
    let Some(v) = &port.port else {
        if let Some(e) = &port.end_port {
            d.error(
                e,
                "endPort: may not be specified when `port` is not specified",
            );
        }
        return Some((1, 65535));
    };
    match &v.value {
        PortValue::Number(n) => {
            let first = number(d, v, *n, "port")?;
            let Some(e) = &port.end_port else {
                return Some((first, first));
            };
            let last = number(d, e, e.value, "endPort")?;
            if last < first {
                d.error(e, "endPort: must be greater than or equal to `port`");
                return None;
            }
            Some((first, last))
        }
        PortValue::Text(name) => {
            let errs = port_name(name);
            for m in &errs {
                d.error(v, format!("port: Invalid value: {name:?}: {m}"));
            }
            if let Some(e) = &port.end_port {
                d.error(
                    e,
                    "endPort: may not be specified when `port` is non-numeric",
                );
                return None;
            }
            if !errs.is_empty() {
                return None;
            }
            let n = named(d, v, name, proto, inbound, ctx)?;
            Some((n, n))
        }
    }
}

/// A rule's ports: numbers and ranges, and the names of egress named ports (which resolve on
/// each destination pod, when the cluster is known).
#[derive(Debug, Default)]
pub(super) struct Ports {
    /// `None` when the field is absent or empty (any port).
    pub(super) numbers: Option<PortSet>,
    /// Egress named TCP ports, for the destination pods to resolve.
    pub(super) egress_names: Vec<String>,
}

/// Compiles a rule's `ports`.
pub(super) fn ports(
    d: &mut Diagnostics<'_>,
    list: &[Spanned<model::NetPort>],
    inbound: bool,
    ctx: &CompileContext,
) -> Ports {
    if list.is_empty() {
        return Ports::default();
    }
    let mut egress_names = Vec::new();
    let mut ranges = Vec::new();
    for p in list {
        let proto = p
            .value
            .protocol
            .as_ref()
            .map_or("TCP", |s| s.value.as_str());
        if !matches!(proto, "TCP" | "UDP" | "SCTP") {
            if let Some(s) = &p.value.protocol {
                d.error(s, format!("protocol: Unsupported value: {proto:?}: supported values: \"TCP\", \"UDP\", \"SCTP\""));
            }
            continue;
        }
        let range = one(d, p, proto, inbound, ctx);
        // The proxy carries TCP only; UDP/SCTP entries allow no TCP traffic.
        if let (Some(r), "TCP") = (range, proto) {
            ranges.push(r);
        }
        if let (Some(v), false, "TCP") = (&p.value.port, inbound, proto)
            && let PortValue::Text(name) = &v.value
            && ctx.cluster.is_some()
            && port_name(name).is_empty()
        {
            egress_names.push(name.clone());
        }
    }
    Ports {
        numbers: Some(PortSet::new(ranges)),
        egress_names,
    }
}
