//! The asynq command model: what a command means in asynq's terms.
//!
//! For now this covers scripts: every Lua script asynq sends is in the
//! [`catalog`], and a script is recognised by the SHA-1 of its body,
//! whether it comes as `EVALSHA`, as `EVAL <body>` (go-redis's fallback on
//! NOSCRIPT) or as `SCRIPT LOAD <body>`. Any other script could do
//! anything Redis can, so it is not asynq traffic. This module reads
//! commands and the catalog; it decides nothing about identities.

pub mod catalog;

use crate::resp::Command;
use catalog::Script;

/// What a scripting command runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScriptUse {
    /// A script of asynq's.
    Catalogued(&'static Script),
    /// A script body or SHA that is not asynq's (hex SHA-1, or a short
    /// description when the command is malformed).
    Unknown(String),
    /// `SCRIPT EXISTS`: asks whether scripts are loaded, runs nothing.
    Harmless,
    /// Scripting that is never asynq's: functions, `SCRIPT FLUSH`/`KILL`.
    Other(&'static str),
}

/// How `cmd` uses scripting, if it does at all.
pub fn script_use(cmd: &Command, name: Option<&'static str>) -> Option<ScriptUse> {
    let arg = |i: usize| cmd.args.get(i).map(|a| &a[..]);
    let known = |found: Option<&'static Script>, sha: String| match found {
        Some(s) => ScriptUse::Catalogued(s),
        None => ScriptUse::Unknown(sha),
    };
    Some(match name? {
        "evalsha" | "evalsha_ro" => match arg(1) {
            Some(sha) => known(
                catalog::by_sha(sha),
                String::from_utf8_lossy(sha).to_ascii_lowercase(),
            ),
            None => ScriptUse::Unknown("(no sha)".into()),
        },
        "eval" | "eval_ro" => match arg(1) {
            Some(body) => known(catalog::by_body(body), catalog::sha1_hex(body)),
            None => ScriptUse::Unknown("(no body)".into()),
        },
        "script" if cmd.arg_is(1, "load") => match arg(2) {
            Some(body) => known(catalog::by_body(body), catalog::sha1_hex(body)),
            None => ScriptUse::Unknown("(no body)".into()),
        },
        "script" if cmd.arg_is(1, "exists") => ScriptUse::Harmless,
        "script" => ScriptUse::Other("SCRIPT"),
        "fcall" | "fcall_ro" => ScriptUse::Other("FCALL"),
        "function" => ScriptUse::Other("FUNCTION"),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::canonical_name;

    fn use_of(args: &[&str]) -> Option<ScriptUse> {
        let cmd = Command::from_args(args);
        script_use(&cmd, canonical_name(&cmd.args[0]))
    }

    #[test]
    fn catalogued_sha_is_recognised() {
        let s = &catalog::SCRIPTS[0];
        assert_eq!(
            use_of(&["EVALSHA", s.sha, "0"]),
            Some(ScriptUse::Catalogued(s))
        );
    }

    #[test]
    fn other_scripts_are_unknown_by_their_sha() {
        assert_eq!(
            use_of(&["EVAL", "return 1", "0"]),
            Some(ScriptUse::Unknown(
                "e0e1f9fabfc9d4800c877a703b823ac0578ff8db".into()
            ))
        );
        assert!(matches!(
            use_of(&["script", "LOAD", "return 1"]),
            Some(ScriptUse::Unknown(_))
        ));
        assert_eq!(
            use_of(&["SCRIPT", "EXISTS", "ab"]),
            Some(ScriptUse::Harmless)
        );
        assert_eq!(
            use_of(&["SCRIPT", "FLUSH"]),
            Some(ScriptUse::Other("SCRIPT"))
        );
        assert_eq!(
            use_of(&["FCALL", "f", "0"]),
            Some(ScriptUse::Other("FCALL"))
        );
        assert_eq!(use_of(&["GET", "k"]), None);
    }
}
