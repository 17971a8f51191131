//! The shim's logs: no terminal colours when stderr is not a terminal, and one JSON object a
//! line with `--log-format json` (as the operator runs it).

use redsess_tests::Shim;

#[tokio::test]
async fn plain_logs_carry_no_terminal_colours_off_a_terminal() {
    let shim = Shim::start(&[], &[]);
    shim.client().ping().await.unwrap();
    let logs = shim.logs();
    assert!(logs.contains("listening on"), "{logs}");
    assert!(
        !logs.contains('\u{1b}'),
        "escape codes in a log that is no terminal: {logs:?}"
    );
}

#[tokio::test]
async fn json_logs_are_one_object_a_line() {
    let shim = Shim::start(&["--log-format", "json"], &[]);
    shim.client().ping().await.unwrap();
    let logs = shim.logs();
    let mut lines = 0;
    for line in logs.lines().filter(|l| !l.trim().is_empty()) {
        let event: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(event["level"].is_string() && event["message"].is_string(), "{line}");
        lines += 1;
    }
    assert!(lines >= 2, "{logs}");
    assert!(logs.contains("\"message\":\"listening on"), "{logs}");
}
