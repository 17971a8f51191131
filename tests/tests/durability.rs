//! Durable acknowledgements (`--redis-wait-replicas`): a session the shim acknowledged
//! survives the loss of the primary while replication lags. Without the option, it may not.
//!
//! The lag is made deterministic: the replica is frozen (SIGSTOP), then the primary drops its
//! replication link (as it does with a replica that stopped reading). Writes from then on are
//! on the primary only. The primary is killed, the replica resumes and is promoted, and a
//! fresh shim on it looks for every session the first shim acknowledged.

use std::time::Duration;

use redsess_shim::client::ClientError;
use redsess_tests::{item, wait_until, RedisServer, Shim, SUCCESS};

const RS: &str = "default";
const REPLICA: &str = "webseald-durable";

/// A primary and one replica of it, in sync.
fn primary_and_replica() -> (RedisServer, RedisServer) {
    let primary = RedisServer::start();
    let replica = RedisServer::start_with(&["--replicaof", "127.0.0.1", &primary.port.to_string()]);
    wait_until(Duration::from_secs(10), "the replica is in sync", || {
        replica
            .command("INFO replication")
            .is_some_and(|info| info.contains("master_link_status:up"))
    });
    (primary, replica)
}

/// What happened to the sessions made while replication lagged.
struct Outcome {
    /// Acknowledged (success) by the shim on the primary.
    acknowledged: Vec<String>,
    /// Refused with a fault, and the fault's text.
    refused: Vec<(String, String)>,
    /// Acknowledged, and not found on the promoted replica.
    lost: Vec<String>,
    /// Faults counted as `not_durable`.
    not_durable: u64,
}

async fn sessions_through_a_failover_with_lag(shim_args: &[&str]) -> Outcome {
    let (mut primary, replica) = primary_and_replica();
    let shim = Shim::start(shim_args, &[("REDSESS_REDIS_URL", &primary.url())]);
    let client = shim.client();
    let create = |id: String| {
        let client = &client;
        async move {
            let items = [item("com.tivoli.am.eb.user-name", "sms", Some(&id))];
            client.create_session(REPLICA, RS, &id, 0, &items).await
        }
    };
    for n in 0..5 {
        let r = create(format!("in-sync-{n}")).await.unwrap();
        assert_eq!(r.result(), SUCCESS, "in-sync-{n}");
    }

    replica.pause();
    let dropped = primary.command("CLIENT KILL TYPE replica").unwrap_or_default();
    assert!(
        dropped.starts_with(":1"),
        "the primary drops its replica's link: {dropped}"
    );
    let mut outcome = Outcome {
        acknowledged: (0..5).map(|n| format!("in-sync-{n}")).collect(),
        refused: Vec::new(),
        lost: Vec::new(),
        not_durable: 0,
    };
    for n in 0..10 {
        let id = format!("lagging-{n}");
        match create(id.clone()).await {
            Ok(r) if r.result() == SUCCESS => outcome.acknowledged.push(id),
            Ok(r) => panic!("{id}: result {}", r.result()),
            Err(ClientError::Fault { status, fault }) => {
                assert_eq!(status, 503, "{id}: {fault}");
                outcome.refused.push((id, fault));
            }
            Err(e) => panic!("{id}: {e}"),
        }
    }
    outcome.not_durable = shim.metric(r#"redsess_shim_faults_total{cause="not_durable"}"#);

    primary.stop();
    replica.resume();
    let promoted = replica.command("REPLICAOF NO ONE").unwrap_or_default();
    assert!(promoted.starts_with("+OK"), "{promoted}");
    let after = Shim::start(&[], &[("REDSESS_REDIS_URL", &replica.url())]);
    let reader = after.client();
    for id in &outcome.acknowledged {
        if reader.get_session(REPLICA, RS, id).await.unwrap().result() != SUCCESS {
            outcome.lost.push(id.clone());
        }
    }
    outcome
}

#[tokio::test]
async fn without_waiting_for_replicas_acknowledged_sessions_are_lost() {
    let outcome = sessions_through_a_failover_with_lag(&[]).await;
    assert!(outcome.refused.is_empty(), "{:?}", outcome.refused);
    assert_eq!(
        outcome.lost,
        (0..10).map(|n| format!("lagging-{n}")).collect::<Vec<_>>(),
        "what the primary alone had is gone with it"
    );
}

#[tokio::test]
async fn waiting_for_a_replica_loses_no_acknowledged_session() {
    let outcome =
        sessions_through_a_failover_with_lag(&["--redis-wait-replicas", "1", "--redis-wait-timeout", "300ms"]).await;
    assert!(outcome.lost.is_empty(), "acknowledged and lost: {:?}", outcome.lost);
    assert_eq!(
        outcome.acknowledged.len(),
        5,
        "only the writes a replica had: {:?}",
        outcome.acknowledged
    );
    assert_eq!(outcome.refused.len(), 10);
    for (id, fault) in &outcome.refused {
        assert!(fault.contains("0 of the 1 Redis replicas"), "{id}: {fault}");
    }
    assert_eq!(outcome.not_durable, 10);
}
