//! Session records sealed at rest, with real shims on a real Redis: what an attacker with
//! write access to Redis can do to a record (flip a byte, copy it under another session ID)
//! and keys the shim does not hold all end as "not found" and a counted cause; a key
//! rotation and a migration from plain to sealed, each while sessions are created and read
//! through two shims, lose none.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redsess_shim::client::DscClient;
use redsess_shim::store::sealing::new_key_line;
use redsess_tests::code::NOT_FOUND;
use redsess_tests::{wait_until, webseal_session, RedisServer, Shim, SUCCESS};

fn shim(redis: &RedisServer, mode: &str, keys: Option<&Path>) -> Shim {
    let url = redis.url();
    let mut env = vec![
        ("REDSESS_REDIS_URL", url.as_str()),
        ("REDSESS_RECORD_ENCRYPTION", mode),
        ("REDSESS_RECORD_KEYS_CHECK", "200ms"),
    ];
    let keys = keys.map(|k| k.display().to_string());
    if let Some(k) = &keys {
        env.push(("REDSESS_RECORD_KEYS_FILE", k));
    }
    Shim::start(&[], &env)
}

/// The raw `d` field (the items) of session `id` in replica set `default`, as RESP text.
fn raw_items(redis: &RedisServer, id: &str) -> String {
    redis
        .command(&format!("HGET \"redsess:s:{{7:default:{id}}}\" d"))
        .unwrap_or_default()
}

fn unopened(shim: &Shim, cause: &str) -> u64 {
    shim.metric(&format!("redsess_shim_records_unopened_total{{cause=\"{cause}\"}}"))
}

async fn get(c: &DscClient, id: &str) -> u32 {
    c.get_session("web", "default", id).await.unwrap().result()
}

async fn create(c: &DscClient, id: &str) -> u32 {
    c.create_session("web", "default", id, 0, &webseal_session(&format!("user-{id}")))
        .await
        .unwrap()
        .result()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_record_that_does_not_open_is_absent_and_counted() {
    let redis = RedisServer::start();
    let keys = redis.dir().join("keys");
    std::fs::write(&keys, format!("# record keys\n{}\n", new_key_line(Some("k1")))).unwrap();
    let mut sealed = shim(&redis, "sealed", Some(&keys));
    let c = sealed.client();
    for id in ["S1", "S2", "S3"] {
        assert_eq!(create(&c, id).await, SUCCESS);
    }
    // The record is sealed: a version byte 3, the key ID, and nothing readable.
    let raw = raw_items(&redis, "S1");
    assert!(raw.contains("\u{3}\u{2}k1"), "{raw:?}");
    assert!(!raw.contains("user-S1"), "the user name is sealed too: {raw:?}");
    assert_eq!(get(&c, "S1").await, SUCCESS);

    // A flipped last byte (the tag), and a record copied under another session ID.
    let flip = "EVAL \"local d = redis.call('HGET', KEYS[1], 'd') \
                local n = #d redis.call('HSET', KEYS[1], 'd', string.sub(d, 1, n - 1) .. \
                string.char(bit.bxor(string.byte(d, n), 1))) return n\" 1 \"redsess:s:{7:default:S1}\"";
    assert!(redis.command(flip).unwrap().starts_with(':'));
    let copied = redis
        .command("COPY \"redsess:s:{7:default:S2}\" \"redsess:s:{7:default:S9}\"")
        .unwrap();
    assert_eq!(copied.trim(), ":1");
    assert_eq!(get(&c, "S1").await, NOT_FOUND, "a flipped byte");
    assert_eq!(get(&c, "S9").await, NOT_FOUND, "a record moved to another ID");
    assert_eq!(get(&c, "S2").await, SUCCESS, "the original still opens");
    assert_eq!(get(&c, "S1").await, NOT_FOUND);
    assert_eq!(unopened(&sealed, "tampered"), 3);
    // The shim's stderr reaches the harness through a pipe and a reader thread: the line may
    // still be on its way when the metric already counts the record.
    wait_until(Duration::from_secs(10), "the tampered record is logged", || {
        sealed.logs().contains("its tag does not match")
    });
    assert_eq!(
        sealed.logs().matches("its tag does not match").count(),
        1,
        "logged once per cause:\n{}",
        sealed.logs()
    );

    // A shim without k1 cannot open what k1 sealed; a plain record is refused in sealed mode.
    let other_keys = redis.dir().join("other-keys");
    std::fs::write(&other_keys, format!("{}\n", new_key_line(Some("k2")))).unwrap();
    let stranger = shim(&redis, "sealed", Some(&other_keys));
    assert_eq!(get(&stranger.client(), "S3").await, NOT_FOUND);
    assert_eq!(unopened(&stranger, "unknown_key"), 1);
    let plain = shim(&redis, "plain", None);
    assert_eq!(create(&plain.client(), "P1").await, SUCCESS);
    assert_eq!(get(&plain.client(), "S3").await, NOT_FOUND, "plain mode has no keys");
    assert_eq!(unopened(&plain, "no_keys"), 1);
    assert_eq!(get(&c, "P1").await, NOT_FOUND);
    assert_eq!(unopened(&sealed, "plain"), 1);
    assert!(sealed.is_running(), "no record made the shim fail");
}

/// Sessions made and read across two shims while `during` runs; returns (made, lost).
async fn under_load<F: std::future::Future<Output = ()>>(a: &Shim, b: &Shim, tag: &str, during: F) -> (usize, usize) {
    let (ca, cb) = (Arc::new(a.client()), Arc::new(b.client()));
    let made = Arc::new(AtomicUsize::new(0));
    let lost = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let (ca, cb, made, lost, stop) = (ca.clone(), cb.clone(), made.clone(), lost.clone(), stop.clone());
            let tag = tag.to_string();
            tokio::spawn(async move {
                let mut n = 0;
                let mut ids = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let id = format!("{tag}-{w}-{n}");
                    let (writer, reader) = if n % 2 == 0 { (&ca, &cb) } else { (&cb, &ca) };
                    assert_eq!(create(writer, &id).await, SUCCESS);
                    made.fetch_add(1, Ordering::Relaxed);
                    if get(reader, &id).await != SUCCESS {
                        lost.fetch_add(1, Ordering::Relaxed);
                    }
                    ids.push(id);
                    n += 1;
                }
                // Every session of this run, once more, through both shims.
                for id in &ids {
                    for c in [&ca, &cb] {
                        if get(c, id).await != SUCCESS {
                            lost.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();
    during.await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    (made.load(Ordering::Relaxed), lost.load(Ordering::Relaxed))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_rotation_under_load_loses_no_session() {
    let redis = RedisServer::start();
    let keys = redis.dir().join("keys");
    let (old, new) = (new_key_line(Some("old")), new_key_line(Some("new")));
    std::fs::write(&keys, format!("{old}\n")).unwrap();
    let a = shim(&redis, "sealed", Some(&keys));
    let b = shim(&redis, "sealed", Some(&keys));
    let write = |text: String| {
        // Written beside and renamed, as the kubelet updates a Secret volume.
        let next = keys.with_extension("next");
        std::fs::write(&next, text).unwrap();
        std::fs::rename(&next, &keys).unwrap();
    };
    let (made, lost) = under_load(&a, &b, "rot", async {
        tokio::time::sleep(Duration::from_millis(700)).await;
        // Step 1: every shim learns the new key; step 2: it seals.
        write(format!("{old}\n{new}\n"));
        tokio::time::sleep(Duration::from_millis(1000)).await;
        write(format!("{new}\n{old}\n"));
        tokio::time::sleep(Duration::from_millis(1000)).await;
    })
    .await;
    assert!(made > 50, "only {made} sessions made");
    assert_eq!(lost, 0, "{lost} of {made} sessions lost");
    assert!(raw_items(&redis, "rot-0-0").contains("\u{3}\u{3}old"));
    assert_eq!(create(&a.client(), "after").await, SUCCESS);
    assert!(raw_items(&redis, "after").contains("\u{3}\u{3}new"));
    for s in [&a, &b] {
        assert!(s.logs().contains("read the record key file again"), "{}", s.logs());
        assert_eq!(unopened(s, "unknown_key") + unopened(s, "tampered"), 0);
    }
}

/// The operator's rotation of a generated key file (`record_keys::rotate`), step by step at the
/// times it would take them, written where two shims under load read it: no session is lost.
#[tokio::test(flavor = "multi_thread")]
async fn the_operators_rotation_steps_under_load_lose_no_session() {
    use k8s_openapi::jiff::{Timestamp, ToSpan};
    use redsess_operator::record_keys::{self, Found};
    let plan = redsess_operator::validate::validate(
        &serde_yaml::from_str(
            "apiVersion: redsess.io/v1alpha1\nkind: SessionCache\nmetadata: {name: c, namespace: n}\n\
             spec: {shim: {encryption: {mode: Sealed}, session: {maxLifetime: 8h}}}",
        )
        .unwrap(),
    )
    .unwrap();
    let redis = RedisServer::start();
    let keys = redis.dir().join("keys");
    let mut found = Found {
        file: redsess_operator::build::secrets::record_key_file(),
        ..Found::default()
    };
    let first = found
        .file
        .lines()
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .to_string();
    std::fs::write(&keys, &found.file).unwrap();
    let a = shim(&redis, "sealed", Some(&keys));
    let b = shim(&redis, "sealed", Some(&keys));
    // One reconcile at `at`: the step it takes, written as the kubelet updates a Secret volume.
    let mut reconcile = |at: Timestamp| {
        let step = record_keys::rotate(&plan, Some(&found), at, &mut record_keys::new_key_line)
            .unwrap()
            .expect("a step is due");
        found = Found {
            file: step.file,
            annotations: step.annotations,
        };
        let next = keys.with_extension("next");
        std::fs::write(&next, &found.file).unwrap();
        std::fs::rename(&next, &keys).unwrap();
        found.file.clone()
    };
    let t0 = Timestamp::now();
    reconcile(t0); // the clock starts
    let due = t0 + (30 * 24).hours();
    let mut staged = String::new();
    let mut sealing = String::new();
    let (made, lost) = under_load(&a, &b, "op", async {
        tokio::time::sleep(Duration::from_millis(700)).await;
        staged = reconcile(due);
        tokio::time::sleep(Duration::from_millis(1000)).await;
        sealing = reconcile(due + 5.minutes());
        tokio::time::sleep(Duration::from_millis(1000)).await;
    })
    .await;
    assert!(made > 50, "only {made} sessions made");
    assert_eq!(lost, 0, "{lost} of {made} sessions lost");
    let ids = |file: &str| -> Vec<String> {
        file.lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| l.split(' ').next().unwrap().to_string())
            .collect()
    };
    let new = ids(&sealing)[0].clone();
    assert_eq!(ids(&staged), [first.clone(), new.clone()], "added second, to open only");
    assert_eq!(
        ids(&sealing),
        [new.clone(), first.clone()],
        "then sealing, the old one opening"
    );
    assert!(raw_items(&redis, "op-0-0").contains(&format!("\u{3}\u{9}{first}")));
    assert_eq!(create(&a.client(), "after").await, SUCCESS);
    assert!(raw_items(&redis, "after").contains(&format!("\u{3}\u{9}{new}")));

    // When no session sealed with the old key can be alive, its line goes; the new key's
    // sessions still open.
    let done = reconcile(due + 5.minutes() + 8.hours() + 3.minutes());
    assert_eq!(ids(&done), [new]);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    for s in [&a, &b] {
        assert_eq!(get(&s.client(), "after").await, SUCCESS);
        assert_eq!(unopened(s, "tampered"), 0);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn migrating_from_plain_to_sealed_under_load_loses_no_session() {
    let redis = RedisServer::start();
    let keys = redis.dir().join("keys");
    std::fs::write(&keys, format!("{}\n", new_key_line(Some("k1")))).unwrap();
    // A rolling change moves through mixed pairs; each pair must read what the other writes.
    let steps: [(&str, &str); 3] = [
        ("plain", "plain-migrating"),
        ("plain-migrating", "seal-migrating"),
        ("seal-migrating", "seal-migrating"),
    ];
    let mut tags = Vec::new();
    for (i, (first, second)) in steps.iter().enumerate() {
        let key_for = |mode: &str| (mode != "plain").then_some(keys.as_path());
        let a = shim(&redis, first, key_for(first));
        let b = shim(&redis, second, key_for(second));
        let tag = format!("mig{i}");
        let (made, lost) = under_load(&a, &b, &tag, tokio::time::sleep(Duration::from_millis(800))).await;
        assert!(made > 20, "{first}+{second}: only {made} made");
        assert_eq!(lost, 0, "{first} beside {second}: {lost} of {made} lost");
        tags.push(tag);
    }
    // At the end every session of every step opens, plain and sealed alike.
    let last = shim(&redis, "seal-migrating", Some(&keys));
    let c = last.client();
    assert!(
        !raw_items(&redis, "mig0-0-0").contains("\u{3}\u{2}k1"),
        "step 0 wrote plain"
    );
    assert!(
        raw_items(&redis, "mig2-0-0").contains("\u{3}\u{2}k1"),
        "step 2 wrote sealed"
    );
    for tag in &tags {
        assert_eq!(get(&c, &format!("{tag}-0-0")).await, SUCCESS, "{tag}");
    }
    // The jump the steps avoid: a plain shim cannot read what a sealing one writes.
    let plain = shim(&redis, "plain", None);
    assert_eq!(get(&plain.client(), "mig2-0-0").await, NOT_FOUND);
    assert_eq!(unopened(&plain, "no_keys"), 1);
}

#[test]
fn encryption_settings_are_checked_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad");
    std::fs::write(&bad, "k1 not-base64\n").unwrap();
    for (env, expected) in [
        (
            vec![("REDSESS_RECORD_ENCRYPTION", "sealed")],
            "--record-encryption (REDSESS_RECORD_ENCRYPTION): seals records in Redis",
        ),
        (
            vec![
                ("REDSESS_REDIS_URL", "redis://127.0.0.1:1"),
                ("REDSESS_RECORD_ENCRYPTION", "sealed"),
            ],
            "needs a key file",
        ),
        (
            vec![
                ("REDSESS_REDIS_URL", "redis://127.0.0.1:1"),
                ("REDSESS_RECORD_ENCRYPTION", "sealed"),
                ("REDSESS_RECORD_KEYS_FILE", bad.to_str().unwrap()),
            ],
            "line 1: the key is not base64",
        ),
        (
            vec![
                ("REDSESS_REDIS_URL", "redis://127.0.0.1:1"),
                ("REDSESS_RECORD_KEYS_FILE", bad.to_str().unwrap()),
            ],
            "--record-encryption is plain",
        ),
    ] {
        let (status, stderr) = Shim::refuse(&[], &env);
        assert!(!status.success());
        assert!(stderr.contains(expected), "{env:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    let out = std::process::Command::new(redsess_tests::shim_binary())
        .arg("keygen")
        .output()
        .unwrap();
    let line = String::from_utf8(out.stdout).unwrap();
    let keys = dir.path().join("keys");
    std::fs::write(&keys, &line).unwrap();
    assert!(redsess_shim::store::sealing::KeyRing::load(&keys).is_ok(), "{line}");
}
