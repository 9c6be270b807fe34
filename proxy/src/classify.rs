//! Interim classifier (replaced by the full one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route { PrimaryOnly, Both }
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxControl { None, Begin, Commit, Rollback, Savepoint, RollbackToSavepoint, ReleaseSavepoint, Prepared, Mixed }
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classification {
    pub route: Route,
    pub statements: usize,
    pub tx: TxControl,
    pub copy_from_stdin: bool,
    pub session_state: bool,
    pub tables: Vec<String>,
    pub nondeterministic: Vec<&'static str>,
}
pub fn classify(sql: &str) -> Classification {
    let stmts: Vec<&str> = sql.split(';').map(str::trim).filter(|s| !s.is_empty()).collect();
    let mut c = Classification { route: Route::PrimaryOnly, statements: stmts.len(), tx: TxControl::None, copy_from_stdin: false, session_state: false, tables: vec![], nondeterministic: vec![] };
    for s in &stmts {
        let l = s.to_lowercase();
        let first = l.split_whitespace().next().unwrap_or("");
        let read = matches!(first, "select" | "show" | "values" | "table") && !l.contains("nextval(") && !l.contains("setval(") && !l.contains(" into ") && !l.contains("for update");
        if !read { c.route = Route::Both; }
        match first {
            "begin" | "start" => c.tx = TxControl::Begin,
            "commit" | "end" => c.tx = TxControl::Commit,
            "rollback" | "abort" => c.tx = TxControl::Rollback,
            "set" | "reset" => c.session_state = true,
            "insert" => { if let Some(t) = l.split_whitespace().nth(2) { c.tables.push(t.split('(').next().unwrap_or(t).to_string()) } }
            "update" => { if let Some(t) = l.split_whitespace().nth(1) { c.tables.push(t.to_string()) } }
            "copy" => { c.copy_from_stdin = l.contains("from stdin"); if let Some(t) = l.split_whitespace().nth(1) { c.tables.push(t.to_string()) } }
            _ => {}
        }
        if l.contains("current_timestamp") { c.nondeterministic.push("current_timestamp"); }
    }
    if stmts.len() > 1 && c.tx != TxControl::None { c.tx = TxControl::Mixed; }
    c
}
