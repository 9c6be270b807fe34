//! Grants and ownership, which `pg_dump --no-owner --no-privileges` leaves out: taken from a
//! second, schema-only dump and re-applied one statement at a time, so that one grant the
//! target can't take (a missing role, an owner the login role can't become) is reported
//! instead of aborting the rest.

use tokio_postgres::Client;

use crate::pg::{self, PgError, Side};
use crate::sqlscript::{self, PieceKind};

/// A statement the target refused.
#[derive(Clone, Debug)]
pub struct Failure {
    pub statement: String,
    pub error: String,
}

/// Keep `GRANT`, `REVOKE`, `ALTER DEFAULT PRIVILEGES` and `ALTER ... OWNER TO` from a
/// schema-only dump, one per line group, in dump order. Ownership given to one of `skip_owners`
/// (the source's bootstrap superuser, whose objects the target's login role owns) is dropped.
pub fn extract(dump: &str, skip_owners: &[&str]) -> String {
    let mut out = String::from(
        "-- Grants and ownership from the source (pg_dump --schema-only), re-applied by\n\
         -- `dualwrite-backfill schema --privileges` one statement at a time.\n",
    );
    for piece in sqlscript::split(dump) {
        if piece.kind != PieceKind::Statement {
            continue;
        }
        let sql = piece.text;
        let w = sqlscript::words(sql);
        let kw = |i: usize, k: &str| w.get(i).is_some_and(|t| t.is_keyword(sql, k));
        let keep = if kw(0, "GRANT")
            || kw(0, "REVOKE")
            || (kw(0, "ALTER") && kw(1, "DEFAULT") && kw(2, "PRIVILEGES"))
        {
            true
        } else if kw(0, "ALTER") {
            let n = w.len();
            // ... OWNER TO role ;
            let owner_at = if n >= 2 && w[n - 1].is_punct(sql, ';') {
                n - 2
            } else {
                n.saturating_sub(1)
            };
            owner_at >= 2
                && kw(owner_at - 1, "TO")
                && kw(owner_at - 2, "OWNER")
                && !skip_owners.contains(&sqlscript::ident_value(sql, &w[owner_at]).as_str())
        } else {
            false
        };
        if keep {
            out.push_str(sql.trim());
            out.push('\n');
        }
    }
    out
}

/// The statements of a privileges script.
pub fn statements(script: &str) -> Vec<String> {
    sqlscript::split(script)
        .into_iter()
        .filter(|p| p.kind == PieceKind::Statement)
        .map(|p| p.text.trim().to_string())
        .collect()
}

/// Apply each statement on its own (with an empty `search_path`, as pg_dump writes them);
/// returns those that failed, with the error.
pub async fn apply(target: &Client, statements: &[String]) -> Result<Vec<Failure>, PgError> {
    let q = |source| PgError::Query {
        side: Side::Target,
        source,
    };
    target
        .batch_execute("SELECT pg_catalog.set_config('search_path', '', false)")
        .await
        .map_err(q)?;
    let mut failed = Vec::new();
    for stmt in statements {
        if let Err(e) = target.batch_execute(stmt).await {
            if e.as_db_error().is_none() {
                // The connection broke: not the statement's fault.
                return Err(q(e));
            }
            failed.push(Failure {
                statement: stmt.clone(),
                error: pg::describe(&e),
            });
        }
    }
    target.batch_execute("RESET search_path").await.map_err(q)?;
    Ok(failed)
}

/// The failed statements as a script to review and re-run, each after its error.
pub fn failures_script(failed: &[Failure]) -> String {
    let mut out = String::from(
        "-- Grants and ownership the target refused during `dualwrite-backfill schema --privileges`.\n\
         -- Fix the cause (e.g. create the missing role) and run this file with psql.\n\
         SELECT pg_catalog.set_config('search_path', '', false);\n",
    );
    for f in failed {
        out.push_str(&format!(
            "\n-- {}\n{}\n",
            f.error.replace('\n', "\n-- "),
            f.statement
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extracts_grants_and_owners() {
        let dump = "SET statement_timeout = 0;\n\
            CREATE TABLE \"public\".\"t\" (\"a\" int);\n\
            ALTER TABLE \"public\".\"t\" OWNER TO \"app\";\n\
            ALTER TABLE \"public\".\"u\" OWNER TO \"postgres\";\n\
            ALTER TABLE ONLY \"public\".\"t\"\n    ADD CONSTRAINT \"t_pkey\" PRIMARY KEY (\"a\");\n\
            COMMENT ON TABLE \"public\".\"t\" IS 'GRANT ALL; OWNER TO x';\n\
            REVOKE ALL ON SCHEMA \"public\" FROM PUBLIC;\n\
            SET SESSION AUTHORIZATION \"adm\";\n\
            GRANT SELECT ON TABLE \"public\".\"t\" TO \"reader\";\n\
            RESET SESSION AUTHORIZATION;\n\
            ALTER DEFAULT PRIVILEGES FOR ROLE \"app\" IN SCHEMA \"public\" GRANT SELECT ON TABLES TO \"reader\";\n";
        let got = extract(dump, &["postgres"]);
        assert_eq!(
            got,
            "-- Grants and ownership from the source (pg_dump --schema-only), re-applied by\n\
             -- `dualwrite-backfill schema --privileges` one statement at a time.\n\
             ALTER TABLE \"public\".\"t\" OWNER TO \"app\";\n\
             REVOKE ALL ON SCHEMA \"public\" FROM PUBLIC;\n\
             GRANT SELECT ON TABLE \"public\".\"t\" TO \"reader\";\n\
             ALTER DEFAULT PRIVILEGES FOR ROLE \"app\" IN SCHEMA \"public\" GRANT SELECT ON TABLES TO \"reader\";\n"
        );
        assert_eq!(statements(&got).len(), 4);
        let script = failures_script(&[Failure {
            statement: "GRANT SELECT ON TABLE \"public\".\"t\" TO \"ghost\";".into(),
            error: "ERROR 42704: role \"ghost\" does not exist".into(),
        }]);
        assert!(script.ends_with(
            "\n-- ERROR 42704: role \"ghost\" does not exist\nGRANT SELECT ON TABLE \"public\".\"t\" TO \"ghost\";\n"
        ));
    }
}
