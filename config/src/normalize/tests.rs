//! Table tests and properties of normalization.

use proptest::prelude::*;

use super::*;

#[test]
fn paths() {
    use Rejection::*;
    let cases: &[(&str, Result<&str, Rejection>)] = &[
        ("", Ok("/")),
        ("/", Ok("/")),
        ("/a/b", Ok("/a/b")),
        ("/a/b/", Ok("/a/b/")),
        ("//a///b", Ok("/a/b")),
        ("/a/./b", Ok("/a/b")),
        ("/a/../b", Ok("/b")),
        ("/a/b/..", Ok("/a/")),
        ("/a/b/.", Ok("/a/b/")),
        ("/a/%2e%2e/b", Ok("/b")),
        ("/a/%2E%2e/b", Ok("/b")),
        ("/a/.%2e/b", Ok("/b")),
        ("/%61dmin", Ok("/admin")),
        ("/%7euser", Ok("/~user")),
        ("/a%20b", Ok("/a%20b")),
        ("/a%3fb", Ok("/a%3Fb")),
        ("/%252e%252e/x", Ok("/%252e%252e/x")),
        ("/..", Err(EscapesRoot)),
        ("/../etc/passwd", Err(EscapesRoot)),
        ("/a/../../b", Err(EscapesRoot)),
        ("/%2e%2e/x", Err(EscapesRoot)),
        ("/a%2Fb", Err(EncodedSlash)),
        ("/a%2fb", Err(EncodedSlash)),
        ("/a%5Cb", Err(Backslash)),
        ("/a\\b", Err(Backslash)),
        ("/a%00b", Err(EncodedNul)),
        ("/a;b", Err(Semicolon)),
        ("/a;jsessionid=1", Err(Semicolon)),
        ("/a%3Bb", Ok("/a%3Bb")),
        ("/a%zz", Err(BadEscape)),
        ("/a%4", Err(BadEscape)),
        ("/a b", Err(BadByte)),
        ("/a\u{7f}", Err(BadByte)),
        ("/é", Err(BadByte)),
        ("a/b", Err(BadTarget)),
    ];
    for (input, want) in cases {
        assert_eq!(
            normalize_path(input).as_deref(),
            want.as_deref(),
            "{input:?}"
        );
    }
}

#[test]
fn targets() {
    let t = normalize_target("/a/../b?x=../y#").expect_err("fragment");
    assert_eq!(t, Rejection::Fragment);
    let t = normalize_target("/a/../b?x=/../y").expect("valid");
    assert_eq!(
        (t.path.as_str(), t.query.as_deref()),
        ("/b", Some("x=/../y"))
    );
    assert_eq!(t.path_and_query(), "/b?x=/../y");
    let t = normalize_target("http://API.example.com:80/v1/%2e/items?q").expect("valid");
    assert_eq!(t.authority.as_deref(), Some("api.example.com"));
    assert_eq!(t.path, "/v1/items");
    let t = normalize_target("http://h").expect("valid");
    assert_eq!(t.path, "/");
    assert_eq!(normalize_target("*").expect("valid").path, "*");
    assert_eq!(normalize_target("ftp://h/x"), Err(Rejection::BadTarget));
    assert_eq!(normalize_target("http:///x"), Err(Rejection::BadTarget));
    assert_eq!(
        normalize_target("/?"),
        Ok(Target {
            path: "/".into(),
            query: Some(String::new()),
            authority: None
        })
    );
}

#[test]
fn hosts() {
    for (input, want) in [
        ("Example.COM", "example.com"),
        ("example.com.", "example.com"),
        ("example.com:8080", "example.com"),
        ("example.com.:8080", "example.com"),
        ("[::1]:80", "[::1]"),
        ("[FD00::1]", "[fd00::1]"),
        ("10.0.0.1:443", "10.0.0.1"),
        ("user@host:1", "host"),
        // Port and trailing dots in either order (backends serve `blocked.example`).
        ("blocked.example:80.", "blocked.example"),
        ("blocked.example.:80.", "blocked.example"),
        // Found by fuzzing: an empty "port" is not a port, so normalizing twice agrees.
        ("::", "::"),
        ("NN::2", "nn::2"),
        ("a:1:2", "a:1:2"),
        ("a:1.", "a"),
        ("x@ a", "a"),
        (" a :80", "a"),
    ] {
        assert_eq!(normalize_host(input), want, "{input}");
    }
}

fn path_strategy() -> impl Strategy<Value = String> {
    let seg = prop_oneof![
        Just("".to_string()),
        Just(".".to_string()),
        Just("..".to_string()),
        Just("%2e".to_string()),
        Just("%2E%2e".to_string()),
        Just(".%2e".to_string()),
        Just("%41".to_string()),
        Just("%3f".to_string()),
        Just("%25".to_string()),
        "[a-z0-9_~-]{1,4}",
    ];
    prop::collection::vec(seg, 0..8).prop_map(|segs| format!("/{}", segs.join("/")))
}

#[test]
fn a_query_is_data_even_when_it_holds_a_url() {
    // Found by fuzzing: `://` in the query of an origin-form target was taken for a scheme.
    let t = normalize_target("/login?next=https://example.com/").expect("origin-form");
    assert_eq!(
        (t.path.as_str(), t.query.as_deref()),
        ("/login", Some("next=https://example.com/"))
    );
    assert_eq!(t.authority, None);
    // An absolute-form target whose query holds `://` forwards a target that parses again.
    let t = normalize_target("http://A4?://").expect("absolute-form");
    assert_eq!(t.authority.as_deref(), Some("a4"));
    let again = normalize_target(&t.path_and_query()).expect("forwarded target");
    assert_eq!((again.path, again.query), (t.path, t.query));
}

fn host_strategy() -> impl Strategy<Value = String> {
    let part = prop_oneof![
        "[a-zA-Z0-9-]{1,6}",
        Just(".".to_string()),
        Just(":".to_string()),
        Just(":80".to_string()),
        Just("@".to_string()),
        Just(" ".to_string()),
        Just("[::1]".to_string()),
    ];
    prop::collection::vec(part, 0..8).prop_map(|p| p.concat())
}

proptest! {
    #[test]
    fn normalizing_a_host_twice_changes_nothing(h in host_strategy(), raw in "\\PC{0,24}") {
        for input in [h, raw] {
            let once = normalize_host(&input);
            prop_assert_eq!(normalize_host(&once), once.clone(), "from {:?}", input);
        }
    }

    #[test]
    fn normalized_paths_are_idempotent_rooted_and_free_of_dot_segments(p in path_strategy()) {
        if let Ok(n) = normalize_path(&p) {
            prop_assert_eq!(normalize_path(&n), Ok(n.clone()));
            prop_assert!(n.starts_with('/'));
            prop_assert!(!n.contains("//"));
            for seg in n.split('/') {
                prop_assert!(seg != ".." && seg != ".", "{} from {}", n, p);
                prop_assert!(!seg.eq_ignore_ascii_case("%2e%2e"));
            }
        }
    }

    #[test]
    fn arbitrary_input_never_panics_and_never_climbs(p in "\\PC{0,40}") {
        if let Ok(n) = normalize_path(&p) {
            prop_assert_eq!(normalize_path(&n), Ok(n.clone()));
            prop_assert!(!n.split('/').any(|s| s == ".."));
        }
    }

    #[test]
    fn a_path_that_climbs_is_rejected(depth in 1usize..5, up in 1usize..8) {
        let p = format!("{}{}", "/d".repeat(depth), "/..".repeat(up));
        let r = normalize_path(&p);
        prop_assert_eq!(r.is_err(), up > depth);
    }
}
