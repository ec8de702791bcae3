use super::*;

/// One identity, appended to configurations that do not test identities.
const IDENTITY: &str = "\n[[identity]]\nname = \"t\"\nsecret_sha256 = [\"2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881\"]\n";

fn parse(text: &str) -> Result<Settings, ConfigError> {
    parse_exact(&format!("{text}{IDENTITY}"))
}

fn parse_exact(text: &str) -> Result<Settings, ConfigError> {
    super::parse(Path::new("t.toml"), text)
}

#[test]
fn empty_file_gives_documented_defaults() {
    let s = parse("").unwrap();
    assert_eq!(s.listeners[0].address.to_string(), "127.0.0.1:6380");
    assert_eq!(s.upstream.address, "127.0.0.1:6379");
    assert_eq!(s.admin.unwrap().to_string(), "127.0.0.1:9380");
    assert_eq!(s.limits, Limits::default());
    assert!(s.upstream.password.is_none());
}

#[test]
fn unknown_key_is_an_error_with_its_line() {
    let err = parse("[upstream]\naddress = \"127.0.0.1:1\"\npasword = \"x\"\n").unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with("t.toml:3:1: unknown field `pasword`"),
        "{msg}"
    );
    assert!(msg.contains("\n3 | pasword = \"x\"\n  | ^^^^^^^"), "{msg}");
}

#[test]
fn password_from_environment_is_never_printed() {
    // PATH is set in every test environment; it stands in for a secret.
    let value = std::env::var("PATH").unwrap();
    let s = parse("[upstream]\npassword_env = \"PATH\"\n").unwrap();
    assert_eq!(s.upstream.password.as_ref().unwrap().expose(), value);
    assert!(!format!("{s:?}").contains(&value));
}

#[test]
fn missing_password_variable_is_named() {
    let err = parse("[upstream]\npassword_env = \"AG_TEST_NOT_SET_ANYWHERE\"\n").unwrap_err();
    assert!(
        err.to_string()
            .contains("AG_TEST_NOT_SET_ANYWHERE is not set")
    );
}

#[test]
fn password_file_is_read_without_its_newline() {
    let dir = std::env::temp_dir().join(format!("ag-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("pw");
    std::fs::write(&file, "s3cret\n").unwrap();
    let s = parse(&format!(
        "[upstream]\nusername = \"proxy\"\npassword_file = {:?}\n",
        file.display().to_string()
    ))
    .unwrap();
    assert_eq!(s.upstream.password.as_ref().unwrap().expose(), "s3cret");
}

#[test]
fn bad_values_name_their_field() {
    let cases = [
        ("[[listener]]\naddress = \"nope\"\n", "listener[0].address"),
        (
            "[[listener]]\naddress = \"127.0.0.1:7000\"\n[[listener]]\naddress = \"127.0.0.1:7000\"\n",
            "listener[1].address",
        ),
        (
            "[[listener]]\naddress = \"127.0.0.1:7000\"\n[admin]\naddress = \"127.0.0.1:7000\"\n",
            "admin.address",
        ),
        (
            "[[listener]]\naddress = \"0.0.0.0:7000\"\n[[listener]]\naddress = \"127.0.0.1:7000\"\n",
            "listener[1].address",
        ),
        ("[admin]\naddress = \"x\"\n", "admin.address"),
        ("[limits]\nmax_args = 0\n", "limits.max_args"),
        (
            "[limits]\nmax_buffer_bytes = 10\nmax_bulk_bytes = 20\n",
            "limits.max_buffer_bytes",
        ),
        ("[upstream]\nusername = \"u\"\n", "upstream.username"),
        ("[upstream]\naddress = \"redis\"\n", "upstream.address"),
        (
            "[upstream.tls]\nca_file = \"/nonexistent/ca.pem\"\n",
            "upstream.tls",
        ),
    ];
    for (text, field) in cases {
        let msg = parse(text).unwrap_err().to_string();
        assert!(msg.contains(field), "{text:?} gave {msg}");
    }
}

#[test]
fn no_identity_is_an_error() {
    let msg = parse_exact("").unwrap_err().to_string();
    assert!(msg.contains("no [[identity]]"), "{msg}");
}

#[test]
fn identities_are_validated() {
    let h = "2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881";
    let cases = [
        (format!("[[identity]]\nname = \"a b\"\nsecret_sha256 = [\"{h}\"]\n"), "identity[0].name"),
        ("[[identity]]\nname = \"a\"\nsecret_sha256 = [\"abc\"]\n".to_string(), "identity[0].secret_sha256[0]"),
        ("[[identity]]\nname = \"a\"\n".to_string(), "needs secret_sha256, cert, or both"),
        ("[[identity]]\nname = \"a\"\ncert = \"email:x\"\n".to_string(), "identity[0].cert"),
        (
            "[[identity]]\nname = \"a\"\nsecret_sha256 = [\"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\"]\n".to_string(),
            "hash of an empty secret",
        ),
        (format!("[[identity]]\nname = \"a\"\nsecret_sha256 = [\"{h}\"]\n[[identity]]\nname = \"a\"\ncert = \"cn:x\"\n"), "defined twice"),
        ("[[identity]]\nname = \"a\"\ncert = \"cn:x\"\n[[identity]]\nname = \"b\"\ncert = \"cn:x\"\n".to_string(), "already the certificate"),
        (format!("[[identity]]\nname = \"a\"\nsecret_sha256 = [\"{h}\"]\n[auth]\nmax_failures_per_minute = 0\n"), "auth.max_failures_per_minute"),
    ];
    for (text, expected) in cases {
        let msg = parse_exact(&text).unwrap_err().to_string();
        assert!(msg.contains(expected), "{text:?} gave {msg}");
    }
    let ok = parse_exact(&format!(
        "[[identity]]\nname = \"default\"\nsecret_sha256 = [\"{h}\", \"{}\"]\ncert = \"uri:spiffe://a/b\"\n",
        h.to_uppercase()
    ))
    .unwrap();
    assert!(ok.identities.get("default").unwrap().needs_secret());
}

#[test]
fn grants_name_defined_identities_and_known_operations() {
    let ok = parse("[[grant]]\nidentity = \"t\"\noperations = [\"raw\"]\n").unwrap();
    assert!(ok.identities.get("t").unwrap().raw);
    assert!(!parse("").unwrap().identities.get("t").unwrap().raw);
    let typed = parse(
        "[[grant]]\nidentity = \"t\"\noperations = [\"enqueue\", \"consume\"]\nqueues = [\"a\", \"b*\"]\ntask_types = [\"*\"]\n",
    )
    .unwrap();
    let grants = &typed.identities.get("t").unwrap().grants;
    assert_eq!(grants.len(), 1);
    assert_eq!(grants[0].ops.len(), 2);
    assert!(grants[0].queues[1].matches("batch"));
    let cases = [
        (
            "[[grant]]\nidentity = \"x\"\noperations = [\"raw\"]\n",
            "grant[0].identity",
        ),
        (
            "[[grant]]\nidentity = \"t\"\noperations = []\n",
            "grant[0].operations",
        ),
        (
            "[[grant]]\nidentity = \"t\"\noperations = [\"fly\"]\n",
            "not an operation",
        ),
        (
            "[[grant]]\nidentity = \"t\"\noperations = [\"enqueue\"]\n",
            "grant[0].queues: is empty",
        ),
        (
            "[[grant]]\nidentity = \"t\"\noperations = [\"enqueue\"]\nqueues = [\"q\"]\n",
            "grant[0].task_types: is required",
        ),
        (
            "[[grant]]\nidentity = \"t\"\noperations = [\"consume\"]\nqueues = [\"q\"]\ntask_types = [\"x\"]\n",
            "applies to \"enqueue\" only",
        ),
        (
            "[[grant]]\nidentity = \"t\"\noperations = [\"raw\"]\nqueues = [\"q\"]\n",
            "takes no queues",
        ),
        (
            "[[grant]]\nidentity = \"t\"\noperations = [\"consume\"]\nqueues = [\"a{b}\"]\n",
            "grant[0].queues[0]",
        ),
        (
            "[[grant]]\nidentity = \"t\"\noperations = [\"consume\"]\nqueues = [\"[a\"]\n",
            "not a valid pattern",
        ),
        (
            "[[grant]]\nidentity = \"t\"\noperations = [\"consume\", \"consume\"]\nqueues = [\"q\"]\n",
            "listed twice",
        ),
    ];
    for (text, expected) in cases {
        let msg = parse(text).unwrap_err().to_string();
        assert!(msg.contains(expected), "{text:?} gave {msg}");
    }
}

#[test]
fn admin_can_be_turned_off() {
    assert!(parse("[admin]\naddress = \"\"\n").unwrap().admin.is_none());
}

#[test]
fn an_identity_without_grants_is_a_warning() {
    let bare = parse("").unwrap();
    assert_eq!(bare.warnings.len(), 1, "{:?}", bare.warnings);
    assert!(bare.warnings[0].contains("\"t\" has no [[grant]]"));
    let granted =
        parse("[[grant]]\nidentity = \"t\"\noperations = [\"inspect\"]\nqueues = [\"*\"]\n")
            .unwrap();
    assert!(granted.warnings.is_empty());
}

#[test]
fn grant_errors_name_the_identity_and_spaces_are_refused() {
    let msg =
        parse("[[grant]]\nidentity = \"t\"\noperations = [\"consume\"]\nqueues = [\"emails \"]\n")
            .unwrap_err()
            .to_string();
    assert!(
        msg.contains("grant[0].queues[0]")
            && msg.contains("leading or trailing spaces")
            && msg.contains("identity \"t\""),
        "{msg}"
    );
}

#[test]
fn rate_limits_and_size_caps_are_validated() {
    let ok = parse(
        "[limits]\nmax_payload_bytes = 100\n\
         [[grant]]\nidentity = \"t\"\noperations = [\"enqueue\"]\nqueues = [\"q\"]\ntask_types = [\"*\"]\nmax_message_bytes = 500\n\
         [[rate_limit]]\nname = \"r\"\nscope = \"task_type\"\ntask_types = [\"email:*\"]\nrate_per_second = 0.5\nburst = 10\n",
    )
    .unwrap();
    let grant = &ok.identities.get("t").unwrap().grants[0];
    assert_eq!(
        grant.caps.max_payload_bytes,
        Some(100),
        "the default applies"
    );
    assert_eq!(grant.caps.max_message_bytes, Some(500));
    assert_eq!(ok.admission.limits.len(), 1);

    let limit = |body: &str| format!("[[rate_limit]]\nname = \"r\"\n{body}");
    let cases = [
        (limit("scope = \"ip\"\nrate_per_second = 1\n"), "rate_limit[0].scope"),
        (
            limit("scope = \"identity\"\nidentities = [\"x\"]\nrate_per_second = 1\n"),
            "rate_limit[0].identities[0]",
        ),
        (limit("scope = \"identity\"\nrate_per_second = 0\n"), "greater than 0"),
        (limit("scope = \"identity\"\nrate_per_second = 1\nburst = 0\n"), "burst"),
        (
            format!(
                "{}{}",
                limit("scope = \"identity\"\nrate_per_second = 1\n"),
                limit("scope = \"identity\"\nrate_per_second = 1\n")
            ),
            "used twice",
        ),
        (
            "[[grant]]\nidentity = \"t\"\noperations = [\"consume\"]\nqueues = [\"q\"]\nmax_payload_bytes = 5\n"
                .to_string(),
            "size caps apply to \"enqueue\" only",
        ),
    ];
    for (text, expected) in cases {
        let msg = parse(&text).unwrap_err().to_string();
        assert!(msg.contains(expected), "{text:?} gave {msg}");
    }
}

#[test]
fn queue_caps_are_validated() {
    let ok =
        parse("[[queue_cap]]\nqueues = [\"q*\"]\nmax_tasks = 10\ncount_retry = true\n").unwrap();
    assert_eq!(ok.admission.queue_caps.len(), 1);
    assert!(ok.admission.queue_caps[0].retry);
    for (text, expected) in [
        (
            "[[queue_cap]]\nqueues = []\nmax_tasks = 10\n",
            "queue_cap[0].queues",
        ),
        (
            "[[queue_cap]]\nqueues = [\"q\"]\nmax_tasks = 0\n",
            "queue_cap[0].max_tasks",
        ),
        ("[[queue_cap]]\nqueues = [\"q\"]\n", "max_tasks"),
    ] {
        let msg = parse(text).unwrap_err().to_string();
        assert!(msg.contains(expected), "{text:?} gave {msg}");
    }
}
