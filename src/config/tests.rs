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

/// The problems of an invalid file, as (line, "field: reason").
fn problems(text: &str) -> Vec<(Option<usize>, String)> {
    match parse_exact(text) {
        Err(ConfigError::Invalid { problems, .. }) => problems
            .into_iter()
            .map(|p| {
                let field = p.field.expect("a validation problem names its field");
                (p.line, format!("{field}: {}", p.reason))
            })
            .collect(),
        other => panic!("expected validation problems, got {other:?}"),
    }
}

/// Asserts that `found` has, in order, one problem per `expected` entry:
/// its line and the start of "field: reason".
fn assert_problems(found: &[(Option<usize>, String)], expected: &[(Option<usize>, &str)]) {
    assert_eq!(found.len(), expected.len(), "{found:#?}");
    for ((line, text), (want_line, want)) in found.iter().zip(expected) {
        assert_eq!(line, want_line, "{text}");
        assert!(text.starts_with(want), "{text:?} does not start {want:?}");
    }
}

const HASH: &str = "2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881";

#[test]
fn every_section_is_validated_and_each_problem_has_its_line() {
    let text = format!(
        "[[listener]]\n\
         address = \"nope\"\n\
         \n\
         [[identity]]\n\
         name = \"web\"\n\
         secret_sha256 = [\"{HASH}\", \"abc\"]\n\
         \n\
         [[identity]]\n\
         name = \"worker\"\n\
         secret_sha256 = [\"{HASH}\"]\n\
         \n\
         [[grant]]\n\
         identity = \"ghost\"\n\
         operations = [\"consume\"]\n\
         queues = [\"q\"]\n\
         \n\
         [[grant]]\n\
         identity = \"worker\"\n\
         operations = [\"consume\"]\n\
         queues = [\n\
           \"ok\",\n\
           \"a{{b\",\n\
         ]\n\
         \n\
         [[rate_limit]]\n\
         name = \"r\"\n\
         scope = \"identity\"\n\
         rate_per_second = 1\n\
         burst = 0\n\
         \n\
         [[queue_cap]]\n\
         queues = [\"q\"]\n\
         max_tasks = 0\n\
         \n\
         [integrity]\n\
         sign_with = \"k9\"\n"
    );
    assert_problems(
        &problems(&text),
        &[
            (Some(2), "listener[0].address: \"nope\" is not ip:port"),
            (
                Some(6),
                "identity[0].secret_sha256[1]: must be 64 hex digits",
            ),
            (
                Some(13),
                "grant[0].identity: \"ghost\" is not a defined [[identity]]",
            ),
            (
                Some(22),
                "grant[1].queues[1]: \"a{b\" is not a valid queue glob",
            ),
            (Some(29), "rate_limit[0].burst: must be at least 1"),
            (Some(33), "queue_cap[0].max_tasks: must be at least 1"),
            (
                Some(36),
                "integrity.sign_with: \"k9\" is not the id of an [[integrity.key]]",
            ),
        ],
    );
    // The file is named in each message, with the line.
    let msg = parse_exact(&text).unwrap_err().to_string();
    assert_eq!(msg.lines().count(), 7, "{msg}");
    assert!(msg.lines().all(|l| l.starts_with("t.toml:")), "{msg}");
    assert!(
        msg.contains("t.toml:13: grant[0].identity: \"ghost\" is not a defined [[identity]]"),
        "{msg}"
    );
}

#[test]
fn a_key_that_is_missing_points_at_its_table_and_a_default_at_nothing() {
    let text = format!(
        "# two lines\n# of comments\n[[identity]]\nname = \"a\"\n\n[[identity]]\nname = \"b\"\nsecret_sha256 = [\"{HASH}\"]\n"
    );
    assert_problems(
        &problems(&text),
        &[(
            Some(3),
            "identity[0].secret_sha256: identity \"a\" needs secret_sha256",
        )],
    );
    // No [[identity]] at all: there is no line to give.
    assert_problems(&problems(""), &[(None, "identity: no [[identity]]")]);
    // A clash with the default admin address: the setting at fault is not
    // written, so no line is given.
    let clash = format!("{IDENTITY}[[listener]]\naddress = \"127.0.0.1:9380\"\n");
    assert_problems(
        &problems(&clash),
        &[(None, "admin.address: 127.0.0.1:9380 is also listener")],
    );
}

#[test]
fn contradictory_limits_are_errors() {
    let grant = |caps: &str| {
        format!(
            "[[grant]]\nidentity = \"t\"\noperations = [\"enqueue\"]\nqueues = [\"q\"]\ntask_types = [\"*\"]\n{caps}"
        )
    };
    let cases = [
        (
            "[limits]\nmax_payload_bytes = 100\nmax_message_bytes = 10\n".to_string(),
            (Some(2), "limits.max_payload_bytes: 100 is more than max_message_bytes (10)"),
        ),
        (
            "[limits]\nmax_message_bytes = 0\n".to_string(),
            (Some(2), "limits.max_message_bytes: must be at least 1"),
        ),
        (
            grant("max_payload_bytes = 50\nmax_message_bytes = 40\n"),
            (Some(6), "grant[0].max_payload_bytes: 50 is more than max_message_bytes (40)"),
        ),
        (
            "[limits]\nmax_bulk_bytes = 20\nmax_buffer_bytes = 10\n".to_string(),
            (Some(3), "limits.max_buffer_bytes: 10 is less than limits.max_bulk_bytes (20)"),
        ),
        (
            "[[rate_limit]]\nname = \"r\"\nscope = \"identity\"\nrate_per_second = 0\n".to_string(),
            (Some(4), "rate_limit[0].rate_per_second: 0 lets nothing through"),
        ),
        (
            "[[rate_limit]]\nname = \"r\"\nscope = \"identity\"\nrate_per_second = 1\n\
             [[rate_limit]]\nname = \"r\"\nscope = \"task_type\"\nrate_per_second = 2\n"
                .to_string(),
            (Some(6), "rate_limit[1].name: \"r\" is used twice (rate_limit[0] has it too)"),
        ),
        (
            "[[rate_limit]]\nname = \"r\"\nscope = \"identity\"\nqueues = [\"x{y}\"]\nrate_per_second = 1\n".to_string(),
            (Some(4), "rate_limit[0].queues[0]: \"x{y}\" is not a valid queue glob"),
        ),
        (
            "[[queue_cap]]\nqueues = [\"ok\", \"}\"]\nmax_tasks = 5\n".to_string(),
            (Some(2), "queue_cap[0].queues[1]: \"}\" is not a valid queue glob"),
        ),
        (
            "[[queue_cap]]\nqueues = [\"[q\"]\nmax_tasks = 5\n".to_string(),
            (Some(2), "queue_cap[0].queues[0]: \"[q\" is not a valid pattern"),
        ),
    ];
    for (text, expected) in cases {
        // The identity is appended after the case: its lines come later.
        assert_problems(&problems(&format!("{text}{IDENTITY}")), &[expected]);
    }
    // Each cap within its own limit is fine.
    parse(&grant("max_payload_bytes = 40\nmax_message_bytes = 40\n")).unwrap();
}

#[test]
fn unreadable_files_name_their_key_and_the_system_error() {
    let dir = std::env::temp_dir().join(format!("ag-cfg-files-{}", std::process::id()));
    let missing = |name: &str| dir.join(name).display().to_string();
    let text = format!(
        "[[listener]]\naddress = \"127.0.0.1:7001\"\n\
         [listener.tls]\ncert_file = {:?}\nkey_file = {:?}\n\
         [upstream]\npassword_file = {:?}\n\
         [upstream.tls]\nca_file = {:?}\n\
         [integrity]\nsign_with = \"k\"\n\
         [[integrity.key]]\nid = \"k\"\nfile = {:?}\n\
         [[integrity.queues]]\nqueues = [\"*\"]\nmode = \"add\"\n",
        missing("cert.pem"),
        missing("key.pem"),
        missing("pw"),
        missing("ca.pem"),
        missing("k"),
    );
    let found = problems(&format!("{text}{IDENTITY}"));
    let os = "No such file or directory";
    assert_problems(
        &found,
        &[
            (Some(4), "listener[0].tls.cert_file: cannot read "),
            (Some(5), "listener[0].tls.key_file: cannot read "),
            (Some(7), "upstream.password_file: cannot read "),
            (Some(9), "upstream.tls.ca_file: cannot read "),
            (Some(14), "integrity.key[0].file: cannot read "),
        ],
    );
    for (_, text) in &found {
        assert!(
            text.contains(&*dir.display().to_string()) && text.contains(os),
            "{text}"
        );
    }
}

#[test]
fn shape_errors_of_separate_tables_are_all_reported_with_line_and_column() {
    let text = "[upstream]\naddress = \"127.0.0.1:1\"\npasword = \"x\"\n\
                [[grant]]\nidentity = \"t\"\noperations = [\"raw\"]\n\
                [[grant]]\nidentity = 3\noperations = [\"raw\"]\n\
                [limits]\n  max_arg = 1\n";
    let Err(ConfigError::Parse { problems, .. }) = parse(text) else {
        panic!("expected shape errors");
    };
    let at: Vec<_> = problems.iter().map(|p| (p.line, p.column)).collect();
    assert_eq!(
        at,
        [(Some(3), Some(1)), (Some(8), Some(12)), (Some(11), Some(3))],
        "{problems:#?}"
    );
    assert!(problems[0].reason.starts_with("unknown field `pasword`"));
    assert!(problems[1].reason.contains("expected a string"));
    assert!(problems[2].reason.starts_with("unknown field `max_arg`"));
    assert_eq!(
        problems[2].message(Path::new("t.toml")),
        "t.toml:11:3: unknown field `max_arg`, expected one of `max_bulk_bytes`, `max_args`, \
         `max_buffer_bytes`, `max_pending_commands`, `max_payload_bytes`, `max_message_bytes`\n\
         11 |   max_arg = 1\n   |   ^^^^^^^"
    );
}

#[test]
fn syntax_errors_give_line_and_column() {
    let Err(ConfigError::Parse { problems, .. }) = parse_exact("[a]\nx = 1\ny = \"open\n") else {
        panic!("expected a syntax error");
    };
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert_eq!((problems[0].line, problems[0].column), (Some(3), Some(10)));
    assert!(problems[0].field.is_none());
}

#[test]
fn signing_problems_are_reported_once_each() {
    let key = std::env::temp_dir().join(format!("ag-cfg-key-{}", std::process::id()));
    std::fs::write(&key, "x".repeat(40)).unwrap();
    let text = format!(
        "[integrity]\n\
         [[integrity.key]]\nid = \"k\"\nfile = {:?}\n\
         [[integrity.key]]\nid = \"k\"\nenv = \"PATH\"\n\
         [[integrity.queues]]\nqueues = [\"a\"]\nmode = \"check\"\n\
         [[integrity.queues]]\nqueues = [\"b{{x}}\"]\nmode = \"add\"\n",
        key.display().to_string()
    );
    assert_problems(
        &problems(&format!("{text}{IDENTITY}")),
        &[
            (
                Some(1),
                "integrity.sign_with: queues in mode check need a signing key",
            ),
            (Some(6), "integrity.key[1].id: \"k\" is used twice"),
            (
                Some(12),
                "integrity.queues[1].queues[0]: \"b{x}\" is not a valid queue glob",
            ),
        ],
    );
}

#[test]
fn warnings_carry_file_line_and_field() {
    let s = parse_exact(&format!(
        "\n[[identity]]\nname = \"lonely\"\nsecret_sha256 = [\"{HASH}\"]\n"
    ))
    .unwrap();
    assert_eq!(s.warnings.len(), 1);
    assert!(
        s.warnings[0]
            .starts_with("t.toml:3: identity[0].name: identity \"lonely\" has no [[grant]]"),
        "{:?}",
        s.warnings
    );
}
