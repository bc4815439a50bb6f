//! Analyses through the real `cdp`: events imported from a file, then `cdp analyze funnel`, `cdp analyze
//! retention`, `cdp analyze trends`, `cdp analyze paths`, `cdp analyze value`, `cdp sql` and `cdp themes` with `--json`, each figure checked by hand.

use std::path::Path;
use std::process::Command;

use cdp_e2e::procs::{cdp_bin, cdp_source_add};
use serde_json::{Value, json};

fn cdp(data: &Path, args: &[&str]) -> (bool, Value, String) {
    let output = Command::new(cdp_bin()).args(args).arg("--data").arg(data).output().expect("running cdp");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    let json = serde_json::from_str(&stdout).unwrap_or(Value::Null);
    (output.status.success(), json, format!("{stdout}{stderr}"))
}

#[test]
fn funnels_retention_and_sql_from_the_command_line() {
    let data = tempfile::tempdir().expect("dir");
    let files = tempfile::tempdir().expect("dir");
    cdp_source_add(data.path(), "shop");
    let events = files.path().join("events.csv");
    std::fs::write(
        &events,
        "user,event,at,revenue\n\
         u1,Signed Up,2026-03-02T08:00:00Z,\n\
         u1,Product Viewed,2026-03-02T09:00:00Z,\n\
         u1,Order Completed,2026-03-02T09:30:00Z,20\n\
         u1,Order Completed,2026-03-10T09:30:00Z,5.5\n\
         u2,Signed Up,2026-03-03T08:00:00Z,\n\
         u2,Product Viewed,2026-03-03T09:00:00Z,\n\
         u2,Order Completed,2026-03-05T09:00:00Z,12\n\
         u3,Signed Up,2026-03-11T08:00:00Z,\n\
         u3,Product Viewed,2026-03-11T09:00:00Z,\n",
    )
    .expect("write");
    let mapping = files.path().join("events.json");
    std::fs::write(
        &mapping,
        r#"{"type": "track", "event": {"column": "event"}, "userId": {"column": "user"},
            "timestamp": {"column": "at"}, "properties": {"revenue": {"column": "revenue", "type": "number"}}}"#,
    )
    .expect("write");
    let import = Command::new(cdp_bin())
        .arg("import")
        .arg(&events)
        .args(["--source", "shop", "--mapping"])
        .arg(&mapping)
        .arg("--data")
        .arg(data.path())
        .output()
        .expect("cdp import");
    assert!(import.status.success(), "{}", String::from_utf8_lossy(&import.stderr));

    // u1 converts in 30 minutes, u2 in two days (outside one day), u3 does not.
    let (ok, funnel, text) = cdp(
        data.path(),
        &[
            "analyze",
            "funnel",
            "--steps",
            "Product Viewed,Order Completed",
            "--window",
            "1d",
            "--from",
            "2026-03-01",
            "--to",
            "2026-03-31",
            "--json",
        ],
    );
    assert!(ok, "{text}");
    let steps: Vec<(String, u64)> = funnel["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| (s["event"].as_str().unwrap_or_default().to_string(), s["persons"].as_u64().unwrap_or(99)))
        .collect();
    assert_eq!(steps, [("Product Viewed".to_string(), 3), ("Order Completed".to_string(), 1)], "{funnel}");
    assert_eq!(funnel["steps"][1]["medianSeconds"], json!(1800.0));
    let (ok, week, _) = cdp(
        data.path(),
        &[
            "analyze",
            "funnel",
            "--steps",
            "Product Viewed,Order Completed",
            "--window",
            "7d",
            "--from",
            "2026-03-01",
            "--to",
            "2026-03-31",
            "--json",
        ],
    );
    assert!(ok);
    assert_eq!(week["steps"][1]["persons"], 2, "u2's order two days later is within 7 days: {week}");

    // Weekly cohorts from Monday 2026-03-02: u1 and u2 (u1 back in weeks 0 and 1, u2 in week 0); u3 on 03-09,
    // whose second week starts after the data's latest event (not yet: null).
    let (ok, retention, text) = cdp(
        data.path(),
        &[
            "analyze",
            "retention",
            "--cohort-event",
            "Signed Up",
            "--return-event",
            "Order Completed",
            "--period",
            "week",
            "--periods",
            "2",
            "--from",
            "2026-03-02",
            "--to",
            "2026-03-15",
            "--json",
        ],
    );
    assert!(ok, "{text}");
    assert_eq!(
        retention["cohorts"],
        json!([
            {"start": "2026-03-02T00:00:00.000Z", "size": 2, "retained": [2, 1], "rates": [1.0, 0.5]},
            {"start": "2026-03-09T00:00:00.000Z", "size": 1, "retained": [0, null], "rates": [0.0, null]},
        ])
    );

    // Revenue per week: 20 + 12 in the week of 03-02, 5.5 in the next.
    let (ok, trend, text) = cdp(
        data.path(),
        &[
            "analyze",
            "trends",
            "--event",
            "Order Completed",
            "--measure",
            "sum",
            "--property",
            "revenue",
            "--period",
            "week",
            "--from",
            "2026-03-02",
            "--to",
            "2026-03-15",
            "--json",
        ],
    );
    assert!(ok, "{text}");
    assert_eq!(
        trend["series"],
        json!([{"key": null, "total": 37.5, "points": [
        {"start": "2026-03-02T00:00:00.000Z", "value": 32.0}, {"start": "2026-03-09T00:00:00.000Z", "value": 5.5}]}])
    );

    let (ok, answer, text) = cdp(
        data.path(),
        &[
            "sql",
            "SELECT profile_id IS NOT NULL AS resolved, sum(property_number(properties, 'revenue')) AS revenue \
         FROM events WHERE event = 'Order Completed' GROUP BY 1",
            "--json",
        ],
    );
    assert!(ok, "{text}");
    assert_eq!(answer["rows"], json!([[true, 37.5]]));

    // Paths within a day of signing up: all three view; u1 then orders (u2's order is two days on).
    let (ok, paths, text) = cdp(
        data.path(),
        &[
            "analyze",
            "paths",
            "--event",
            "Signed Up",
            "--depth",
            "2",
            "--window",
            "1d",
            "--from",
            "2026-03-01",
            "--to",
            "2026-03-31",
            "--json",
        ],
    );
    assert!(ok, "{text}");
    assert_eq!(
        paths["nodes"],
        json!([
            {"step": 0, "event": "Signed Up", "persons": 3, "ended": 0},
            {"step": 1, "event": "Product Viewed", "persons": 3, "ended": 2},
            {"step": 2, "event": "Order Completed", "persons": 1, "ended": 1},
        ])
    );
    assert_eq!(
        paths["links"],
        json!([{"source": 0, "target": 1, "persons": 3}, {"source": 1, "target": 2, "persons": 1}])
    );

    // RFM at the end of 03-05 and of 03-31: u1 (days since the last order lowest of two, one order) hibernating,
    // then loyal (two orders, the most recent); u2 need attention, then hibernating. Two buyers are too few
    // for the lifetime value models.
    let (ok, value, text) = cdp(
        data.path(),
        &["analyze", "value", "--at", "2026-03-31", "--since", "2026-03-05", "--horizon", "30", "--json"],
    );
    assert!(ok, "{text}");
    assert_eq!(value["rfm"][0]["segments"], json!({"hibernating": 1, "need_attention": 1}));
    assert_eq!(value["rfm"][1]["segments"], json!({"hibernating": 1, "loyal": 1}));
    assert_eq!(
        value["movement"],
        json!([{"from": "hibernating", "to": "loyal", "buyers": 1}, {"from": "need_attention", "to": "hibernating", "buyers": 1}])
    );
    assert_eq!(value["lifetimeValue"], Value::Null);

    // Mistakes are named, and nothing runs.
    let (ok, _, text) = cdp(data.path(), &["analyze", "compare", "--audience", "vips", "--json"]);
    assert!(!ok && text.contains("audience: no audience `vips` in the data"), "{text}");
    let (ok, _, text) = cdp(data.path(), &["analyze", "funnel", "--steps", "Product Viewed,Order Complete", "--json"]);
    assert!(!ok && text.contains("did you mean `Order Completed`?"), "{text}");
    let (ok, _, text) =
        cdp(data.path(), &["analyze", "funnel", "--steps", "Product Viewed,Order Completed", "--window", "7"]);
    assert!(!ok && text.contains("--window: `7` needs a unit"), "{text}");
    let (ok, _, text) = cdp(data.path(), &["sql", "DROP TABLE events"]);
    assert!(!ok && text.contains("sql:") && text.contains("not supported"), "{text}");
    let (ok, table, text) =
        cdp(data.path(), &["sql", "SELECT event, count(*) AS n FROM events GROUP BY event ORDER BY n DESC, event"]);
    assert!(ok && table.is_null(), "{text}");
    assert!(text.starts_with("event") && text.contains("Order Completed  3") && text.contains("(3 rows)"), "{text}");

    // Theme dashboards from what the import put in the data dictionary: the funnel over the steps the data has;
    // no audiences, so no audience overview.
    let (ok, themes, text) = cdp(data.path(), &["themes", "--json"]);
    assert!(ok, "{text}");
    let ecommerce = &themes["themes"][1];
    assert_eq!(ecommerce["insights"][0]["id"], "theme-ecommerce-funnel", "{ecommerce}");
    assert_eq!(
        ecommerce["insights"][0]["analysis"]["definition"]["steps"],
        json!(["Product Viewed", "Order Completed"])
    );
    assert_eq!(themes["themes"][4]["leftOut"][0]["reason"], "no computed audiences (active or deprecated)", "{themes}");
    let (ok, _, text) = cdp(data.path(), &["themes", "ecommerce", "--save"]);
    assert!(
        ok && text.contains("dashboard theme-ecommerce saved") && text.contains("+ theme-ecommerce-revenue"),
        "{text}"
    );
    let boards = std::fs::read_to_string(data.path().join("config/dashboards.json")).expect("dashboards saved");
    assert!(boards.contains("\"theme-ecommerce\""), "{boards}");
    // The saved dashboard runs from the command line over the data's last 30 days: u1 and u2 order within 7 days
    // of a view, u3 does not.
    let (ok, _, text) = cdp(data.path(), &["dashboards", "list"]);
    assert!(ok && text.contains("theme-ecommerce") && text.contains("last 30 days"), "{text}");
    let (ok, board, text) = cdp(data.path(), &["dashboards", "run", "theme-ecommerce"]);
    assert!(ok, "{text}");
    assert_eq!(
        (board["from"].as_str(), board["to"].as_str()),
        (Some("2026-02-10T00:00:00.000Z"), Some("2026-03-12T00:00:00.000Z"))
    );
    let funnel = &board["insights"][0]["run"]["result"]["steps"];
    let persons: Vec<u64> = funnel.as_array().expect("steps").iter().map(|s| s["persons"].as_u64().unwrap()).collect();
    assert_eq!(persons, [3, 2], "{board}");
    assert_eq!(board["insights"][2]["run"]["result"]["series"][0]["total"], 37.5, "{board}");
    let (ok, one, text) = cdp(data.path(), &["insights", "run", "theme-ecommerce-orders"]);
    assert!(ok && one["insight"] == "theme-ecommerce-orders" && one["cached"] == false, "{text}");
    let (ok, _, text) = cdp(data.path(), &["insights", "run", "theme-ecommerce-order"]);
    assert!(!ok && text.contains("did you mean `theme-ecommerce-orders`?"), "{text}");
    let (ok, _, text) = cdp(data.path(), &["themes", "audiences", "--save"]);
    assert!(!ok && text.contains("the data supports none of its insights"), "{text}");
    let (ok, _, text) = cdp(data.path(), &["themes", "shop"]);
    assert!(!ok && text.contains("one of acquisition, ecommerce"), "{text}");
}
