//! A policy file of arbitrary text, parsed and compiled as `load_policy` does: never panics
//! (time and memory are bounded by libFuzzer's `-timeout` and `-rss_limit_mb`).
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use portcullis_config::workload::NamedPort;
use portcullis_config::{CompileContext, compile, parse_str};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let Ok(docs) = parse_str("fuzz.yaml", &text) else {
        return;
    };
    let _ = compile::compile(&docs, &CompileContext::default());
    // With the workload's labels, namespace and named ports known, NetworkPolicy selection runs too.
    let ctx = CompileContext {
        workload_labels: Some(BTreeMap::from([
            ("app".to_string(), "web".to_string()),
            ("tier".to_string(), "frontend".to_string()),
        ])),
        named_ports: BTreeMap::from([
            ("http".to_string(), NamedPort::tcp(8080)),
            (
                "dns".to_string(),
                NamedPort {
                    port: 53,
                    protocol: "UDP".into(),
                },
            ),
        ]),
        workload_namespace: Some("web".into()),
        cluster: None,
    };
    let _ = compile::compile(&docs, &ctx);
});
