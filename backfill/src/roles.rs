//! Sanitising a `pg_dumpall --roles-only` script for a target whose login role is not a
//! superuser (runbook step 3), on parsed statements rather than with `sed`.
//!
//! Removed: `CREATE ROLE`/`ALTER ROLE`/`COMMENT ON ROLE` and memberships of the roles the target
//! keeps for itself (the bootstrap superusers, the target's login role); the attributes only a
//! superuser may set (`[NO]SUPERUSER`, `[NO]REPLICATION`, `[NO]BYPASSRLS`); `GRANTED BY`.
//! `CREATE ROLE` of a role the target already has is skipped so that its `ALTER ROLE` still
//! applies. Every change is reported.

use std::collections::BTreeSet;
use std::fmt;

use crate::sqlscript::{self, PieceKind, Token, TokenKind};

const NO_ADMIN: &str = "not applied: the role exists on the target and the target's login role has no ADMIN OPTION on it (left as it is)";

/// Attributes a non-superuser cannot grant.
const SUPERUSER_ATTRIBUTES: &[&str] = &[
    "SUPERUSER",
    "NOSUPERUSER",
    "REPLICATION",
    "NOREPLICATION",
    "BYPASSRLS",
    "NOBYPASSRLS",
];

/// What the sanitiser needs to know about the target.
#[derive(Clone, Debug, Default)]
pub struct RoleContext {
    /// Roles whose statements are dropped entirely, with the reason (e.g. "the source's
    /// bootstrap superuser").
    pub reserved: Vec<(String, String)>,
    /// Roles that exist on the target already: their `CREATE ROLE` is skipped.
    pub existing: BTreeSet<String>,
    /// Roles on the target the login role has no ADMIN OPTION on (PostgreSQL 16+, login not a
    /// superuser): it may not alter them, comment on them or grant membership in them.
    pub no_admin: BTreeSet<String>,
    /// More attributes to strip because the target's login role may not set them (a
    /// CREATEROLE role without CREATEDB may not say `CREATEDB` or `NOCREATEDB`).
    pub strip_also: Vec<&'static str>,
}

impl RoleContext {
    /// Attributes the target's login role may not set, given its own.
    pub fn attributes_not_settable(superuser: bool, createdb: bool) -> Vec<&'static str> {
        if superuser || createdb {
            Vec::new()
        } else {
            vec!["CREATEDB", "NOCREATEDB"]
        }
    }
}

impl RoleContext {
    fn reserved(&self, role: &str) -> Option<&str> {
        self.reserved
            .iter()
            .find(|(r, _)| r == role)
            .map(|(_, why)| why.as_str())
    }
}

/// One edit the sanitiser made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// The statement as dumped (first line).
    pub statement: String,
    /// What was done to it.
    pub action: String,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.statement, self.action)
    }
}

/// The sanitised script and what changed.
#[derive(Clone, Debug)]
pub struct Sanitised {
    pub script: String,
    pub changes: Vec<Change>,
}

/// Sanitise a roles script. Gaps, comments and meta-commands are kept byte for byte; a dropped
/// statement leaves nothing (its line's newline included).
pub fn sanitise(script: &str, ctx: &RoleContext) -> Sanitised {
    let mut out = String::with_capacity(script.len());
    let mut changes = Vec::new();
    let mut skip_newline = false;
    for piece in sqlscript::split(script) {
        let mut text = piece.text;
        if skip_newline {
            skip_newline = false;
            if piece.kind == PieceKind::Gap {
                text = text.strip_prefix('\n').unwrap_or(text);
            }
        }
        if piece.kind != PieceKind::Statement {
            out.push_str(text);
            continue;
        }
        match sanitise_statement(text, ctx) {
            Edit::Keep => out.push_str(text),
            Edit::Replace(new, mut why) => {
                out.push_str(&new);
                changes.append(&mut why);
            }
            Edit::Drop(why) => {
                changes.push(Change {
                    statement: redacted(text),
                    action: why,
                });
                skip_newline = true;
            }
        }
    }
    Sanitised {
        script: out,
        changes,
    }
}

enum Edit {
    Keep,
    Replace(String, Vec<Change>),
    Drop(String),
}

fn sanitise_statement(sql: &str, ctx: &RoleContext) -> Edit {
    let w = sqlscript::words(sql);
    let kw = |i: usize, k: &str| w.get(i).is_some_and(|t| t.is_keyword(sql, k));
    let is_role_kw = |i: usize| kw(i, "ROLE") || kw(i, "USER") || kw(i, "GROUP");
    let name_at = |i: usize| w.get(i).map(|t| sqlscript::ident_value(sql, t));

    if (kw(0, "CREATE") || kw(0, "ALTER")) && is_role_kw(1) {
        let Some(role) = name_at(2) else {
            return Edit::Keep;
        };
        if let Some(why) = ctx.reserved(&role) {
            return Edit::Drop(format!("removed ({why})"));
        }
        if ctx.no_admin.contains(&role) {
            return Edit::Drop(NO_ADMIN.into());
        }
        if kw(0, "CREATE") && ctx.existing.contains(&role) {
            return Edit::Drop(
                "skipped: the role exists on the target (its attributes are set by the ALTER ROLE that follows)"
                    .into(),
            );
        }
        // ALTER ROLE x SET/RESET/RENAME/IN DATABASE: no attributes to strip.
        if ["SET", "RESET", "RENAME", "IN"].iter().any(|k| kw(3, k)) {
            return Edit::Keep;
        }
        return strip_attributes(sql, &w, &ctx.strip_also);
    }
    if kw(0, "COMMENT") && kw(1, "ON") && is_role_kw(2) {
        let role = name_at(3).unwrap_or_default();
        if let Some(why) = ctx.reserved(&role) {
            return Edit::Drop(format!("removed ({why})"));
        }
        if ctx.no_admin.contains(&role) {
            return Edit::Drop(NO_ADMIN.into());
        }
        return Edit::Keep;
    }
    if kw(0, "GRANT") && !w.iter().any(|t| t.is_keyword(sql, "ON")) {
        // Role membership: GRANT roles TO members [WITH ...] [GRANTED BY grantor].
        let to = w.iter().position(|t| t.is_keyword(sql, "TO"));
        let end = w
            .iter()
            .position(|t| {
                t.is_keyword(sql, "WITH") || t.is_keyword(sql, "GRANTED") || t.is_punct(sql, ';')
            })
            .unwrap_or(w.len());
        if let Some(to) = to.filter(|&to| to < end) {
            let name_list = |ts: &[Token]| -> Vec<String> {
                ts.iter()
                    .filter(|t| matches!(t.kind, TokenKind::Word | TokenKind::QuotedIdent))
                    .map(|t| sqlscript::ident_value(sql, t))
                    .collect()
            };
            let granted = name_list(&w[1..to]);
            let members = name_list(&w[to + 1..end]);
            for name in granted.iter().chain(&members) {
                if let Some(why) = ctx.reserved(name) {
                    return Edit::Drop(format!("removed (membership of {name}: {why})"));
                }
            }
            if let Some(name) = granted.iter().find(|g| ctx.no_admin.contains(*g)) {
                return Edit::Drop(format!(
                    "not applied: the target's login role has no ADMIN OPTION on {name}, so it cannot grant it"
                ));
            }
        }
    }
    if kw(0, "GRANT") || kw(0, "REVOKE") {
        return strip_granted_by(sql, &w);
    }
    Edit::Keep
}

/// Remove `[NO]SUPERUSER`, `[NO]REPLICATION`, `[NO]BYPASSRLS` (with the space before each);
/// a `WITH` left with nothing after it goes too.
fn strip_attributes(sql: &str, w: &[Token], also: &[&str]) -> Edit {
    let mut cut: Vec<(usize, usize)> = Vec::new();
    let mut removed = Vec::new();
    for t in w.iter().skip(3) {
        let text = t.text(sql);
        if t.kind == TokenKind::Word
            && SUPERUSER_ATTRIBUTES
                .iter()
                .chain(also)
                .any(|a| a.eq_ignore_ascii_case(text))
        {
            cut.push((space_before(sql, t.start), t.end));
            removed.push(text.to_ascii_uppercase());
        }
    }
    if cut.is_empty() {
        return Edit::Keep;
    }
    // `WITH` followed only by removed attributes and `;`.
    let kept_after_with = w.iter().skip(3).any(|t| {
        !t.is_keyword(sql, "WITH") && !t.is_punct(sql, ';') && !cut.iter().any(|(_, e)| *e == t.end)
    });
    if !kept_after_with {
        if let Some(with) = w.iter().skip(3).find(|t| t.is_keyword(sql, "WITH")) {
            cut.push((space_before(sql, with.start), with.end));
        }
    }
    let new = remove_spans(sql, &mut cut);
    Edit::Replace(
        new,
        vec![Change {
            statement: redacted(sql),
            action: format!("removed {}", removed.join(", ")),
        }],
    )
}

/// Remove every `GRANTED BY role` clause.
fn strip_granted_by(sql: &str, w: &[Token]) -> Edit {
    let mut cut = Vec::new();
    let mut removed = Vec::new();
    for (k, t) in w.iter().enumerate() {
        if t.is_keyword(sql, "GRANTED") && w.get(k + 1).is_some_and(|b| b.is_keyword(sql, "BY")) {
            if let Some(role) = w.get(k + 2).filter(|r| !r.is_punct(sql, ';')) {
                cut.push((space_before(sql, t.start), role.end));
                removed.push(format!("GRANTED BY {}", role.text(sql)));
            }
        }
    }
    if cut.is_empty() {
        return Edit::Keep;
    }
    Edit::Replace(
        remove_spans(sql, &mut cut),
        vec![Change {
            statement: redacted(sql),
            action: format!("removed {}", removed.join(", ")),
        }],
    )
}

/// A statement for a report: first line, the password literal replaced by `'***'`.
fn redacted(sql: &str) -> String {
    let w = sqlscript::words(sql);
    let mut out = String::new();
    let mut pos = 0;
    for pair in w.windows(2) {
        if pair[0].is_keyword(sql, "PASSWORD") && pair[1].kind == TokenKind::Str {
            out.push_str(&sql[pos..pair[1].start]);
            out.push_str("'***'");
            pos = pair[1].end;
        }
    }
    out.push_str(&sql[pos..]);
    sqlscript::short(&out)
}

/// Start of the whitespace directly before byte `start` (spaces and tabs only).
fn space_before(sql: &str, start: usize) -> usize {
    let before = &sql[..start];
    before.len() - (before.len() - before.trim_end_matches([' ', '\t']).len())
}

fn remove_spans(sql: &str, cut: &mut [(usize, usize)]) -> String {
    cut.sort();
    let mut out = String::with_capacity(sql.len());
    let mut pos = 0;
    for &(a, b) in cut.iter() {
        if a >= pos {
            out.push_str(&sql[pos..a]);
            pos = b;
        }
    }
    out.push_str(&sql[pos..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> RoleContext {
        RoleContext {
            reserved: vec![
                ("postgres".into(), "the source's bootstrap superuser".into()),
                ("tsdbadmin".into(), "the target's login role".into()),
            ],
            existing: ["app".to_string(), "ops".to_string()].into_iter().collect(),
            no_admin: ["ops".to_string(), "pg_read_all_data".to_string()]
                .into_iter()
                .collect(),
            strip_also: Vec::new(),
        }
    }

    #[test]
    fn sanitises_a_dumpall_script() {
        let input = r#"--
-- PostgreSQL database cluster dump
--

\restrict Rd8jNPaYxy

SET default_transaction_read_only = off;

--
-- Roles
--

CREATE ROLE "We""ird";
ALTER ROLE "We""ird" WITH SUPERUSER INHERIT NOCREATEROLE NOCREATEDB NOLOGIN NOREPLICATION NOBYPASSRLS;
CREATE ROLE "app";
ALTER ROLE "app" WITH NOSUPERUSER INHERIT LOGIN NOREPLICATION NOBYPASSRLS PASSWORD 'it''s SUPERUSER; -- not a comment';
COMMENT ON ROLE "app" IS 'the ''app'' role; BYPASSRLS';
CREATE ROLE "postgres";
ALTER ROLE "postgres" WITH SUPERUSER INHERIT CREATEROLE CREATEDB LOGIN REPLICATION BYPASSRLS;
COMMENT ON ROLE "postgres" IS 'bootstrap';
CREATE ROLE "repl";
ALTER ROLE "repl" WITH REPLICATION;
/* a comment with GRANTED BY "x"; */
ALTER ROLE "app" SET "search_path" TO 'NOSUPERUSER', 'b';
ALTER ROLE "tsdbadmin" SET "work_mem" TO '4MB';

GRANT "grp" TO "adm" WITH ADMIN OPTION, INHERIT TRUE GRANTED BY "postgres";
GRANT "grp" TO "app" WITH INHERIT TRUE GRANTED BY "adm";
GRANT "grp" TO "postgres" WITH INHERIT TRUE GRANTED BY "adm";
GRANT "g""q" TO "byp" GRANTED BY "We""ird"; -- trailing comment

\unrestrict Rd8jNPaYxy
"#;
        let expected = r#"--
-- PostgreSQL database cluster dump
--

\restrict Rd8jNPaYxy

SET default_transaction_read_only = off;

--
-- Roles
--

CREATE ROLE "We""ird";
ALTER ROLE "We""ird" WITH INHERIT NOCREATEROLE NOCREATEDB NOLOGIN;
ALTER ROLE "app" WITH INHERIT LOGIN PASSWORD 'it''s SUPERUSER; -- not a comment';
COMMENT ON ROLE "app" IS 'the ''app'' role; BYPASSRLS';
CREATE ROLE "repl";
ALTER ROLE "repl";
/* a comment with GRANTED BY "x"; */
ALTER ROLE "app" SET "search_path" TO 'NOSUPERUSER', 'b';

GRANT "grp" TO "adm" WITH ADMIN OPTION, INHERIT TRUE;
GRANT "grp" TO "app" WITH INHERIT TRUE;
GRANT "g""q" TO "byp"; -- trailing comment

\unrestrict Rd8jNPaYxy
"#;
        let got = sanitise(input, &ctx());
        assert_eq!(got.script, expected);
        let changes: Vec<String> = got.changes.iter().map(|c| c.to_string()).collect();
        assert_eq!(
            changes,
            vec![
                r#"ALTER ROLE "We""ird" WITH SUPERUSER INHERIT NOCREATEROLE NOCREATEDB NOLOGIN NOREPLICATION NOBYPASSRLS;: removed SUPERUSER, NOREPLICATION, NOBYPASSRLS"#,
                r#"CREATE ROLE "app";: skipped: the role exists on the target (its attributes are set by the ALTER ROLE that follows)"#,
                r#"ALTER ROLE "app" WITH NOSUPERUSER INHERIT LOGIN NOREPLICATION NOBYPASSRLS PASSWORD '***';: removed NOSUPERUSER, NOREPLICATION, NOBYPASSRLS"#,
                r#"CREATE ROLE "postgres";: removed (the source's bootstrap superuser)"#,
                r#"ALTER ROLE "postgres" WITH SUPERUSER INHERIT CREATEROLE CREATEDB LOGIN REPLICATION BYPASSRLS;: removed (the source's bootstrap superuser)"#,
                r#"COMMENT ON ROLE "postgres" IS 'bootstrap';: removed (the source's bootstrap superuser)"#,
                r#"ALTER ROLE "repl" WITH REPLICATION;: removed REPLICATION"#,
                r#"ALTER ROLE "tsdbadmin" SET "work_mem" TO '4MB';: removed (the target's login role)"#,
                r#"GRANT "grp" TO "adm" WITH ADMIN OPTION, INHERIT TRUE GRANTED BY "postgres";: removed GRANTED BY "postgres""#,
                r#"GRANT "grp" TO "app" WITH INHERIT TRUE GRANTED BY "adm";: removed GRANTED BY "adm""#,
                r#"GRANT "grp" TO "postgres" WITH INHERIT TRUE GRANTED BY "adm";: removed (membership of postgres: the source's bootstrap superuser)"#,
                r#"GRANT "g""q" TO "byp" GRANTED BY "We""ird";: removed GRANTED BY "We""ird""#,
            ]
        );
    }

    #[test]
    fn roles_without_admin_option_are_left_alone() {
        let got = sanitise(
            "CREATE ROLE \"ops\";\nALTER ROLE \"ops\" WITH LOGIN;\nCOMMENT ON ROLE \"ops\" IS 'x';\n\
             GRANT \"pg_read_all_data\" TO \"app\";\nGRANT \"grp\" TO \"ops\";\n",
            &ctx(),
        );
        assert_eq!(got.script, "GRANT \"grp\" TO \"ops\";\n");
        let actions: Vec<&str> = got.changes.iter().map(|c| c.action.as_str()).collect();
        assert_eq!(
            actions,
            vec![
                NO_ADMIN,
                NO_ADMIN,
                NO_ADMIN,
                "not applied: the target's login role has no ADMIN OPTION on pg_read_all_data, so it cannot grant it",
            ]
        );
    }

    #[test]
    fn unquoted_and_lower_case() {
        let c = ctx();
        let got = sanitise(
            "create role Postgres;\nalter user bob superuser login;\n",
            &c,
        );
        assert_eq!(got.script, "alter user bob login;\n");
        let got = sanitise("ALTER ROLE x WITH SUPERUSER;\n", &c);
        assert_eq!(got.script, "ALTER ROLE x;\n");
        let c = RoleContext {
            strip_also: RoleContext::attributes_not_settable(false, false),
            ..ctx()
        };
        let got = sanitise(
            "ALTER ROLE x WITH NOSUPERUSER CREATEDB LOGIN PASSWORD 'p';\n",
            &c,
        );
        assert_eq!(got.script, "ALTER ROLE x WITH LOGIN PASSWORD 'p';\n");
        assert_eq!(
            got.changes[0].to_string(),
            "ALTER ROLE x WITH NOSUPERUSER CREATEDB LOGIN PASSWORD '***';: removed NOSUPERUSER, CREATEDB"
        );
    }
}
