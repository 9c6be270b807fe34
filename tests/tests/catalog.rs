//! Time-series discovery on real servers.

use dualwrite_common::catalog::{discover, CatalogError, TableKind, TableSpec, TimeType};
use dualwrite_common::PgUrl;
use dualwrite_tests::{Cluster, PgBin};

#[tokio::test]
async fn finds_range_partitions_and_named_tables() {
    let c = Cluster::start(&PgBin::source());
    c.create_db("app");
    c.psql(
        "app",
        "CREATE TABLE readings (ts timestamptz NOT NULL, v float8) PARTITION BY RANGE (ts);
         CREATE TABLE readings_1 PARTITION OF readings FOR VALUES FROM ('2024-01-01') TO ('2024-01-02');
         CREATE TABLE readings_2 PARTITION OF readings FOR VALUES FROM ('2024-01-02') TO ('2024-01-03');
         CREATE TABLE readings_d PARTITION OF readings DEFAULT;
         CREATE TABLE by_id (id int, v int) PARTITION BY RANGE (id);
         CREATE TABLE by_id_1 PARTITION OF by_id FOR VALUES FROM (0) TO (10);
         CREATE TABLE events (id int, at timestamp, label text);",
    );
    let url: PgUrl = c.url("app").parse().unwrap();
    let client = dualwrite_common::connect(&url, "test").await.unwrap();
    let found = discover(&client, &[]).await.unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    let r = &found[0];
    assert_eq!(
        (r.table.to_string(), r.kind.clone(), r.time_type),
        (
            "public.readings".into(),
            TableKind::Partitioned,
            TimeType::Timestamptz
        )
    );
    assert_eq!(r.chunks.len(), 3);
    assert_eq!(r.chunks[0].relation.name, "readings_1");
    assert_eq!(r.chunks[1].start, r.chunks[0].end);
    assert!(r.chunks[2].is_default);

    let named = discover(&client, &["events:at".parse::<TableSpec>().unwrap()])
        .await
        .unwrap();
    assert_eq!(
        (named[0].kind.clone(), named[0].time_type),
        (TableKind::Plain, TimeType::Timestamp)
    );

    let err = discover(&client, &["nope:at".parse().unwrap()])
        .await
        .unwrap_err();
    assert!(matches!(err, CatalogError::UnknownTable(_)), "{err}");
    let err = discover(&client, &["events:label".parse().unwrap()])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not a time type"), "{err}");
    let err = discover(&client, &["events:missing".parse().unwrap()])
        .await
        .unwrap_err();
    assert!(matches!(err, CatalogError::UnknownColumn { .. }), "{err}");
}
