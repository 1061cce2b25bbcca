//! The embedded store on a full disk: a small tmpfs (mounting needs root; CI runs as
//! root, elsewhere the test skips loudly) that fills up under revocations and is then
//! grown again.

use std::{path::Path, process::Command, time::Duration};

use introspectd::{
    config::{IssuerSection, StoreBackend, StoreSection},
    grpc::pb::{self, revoke_request::Target},
};
use jsonwebtoken::Algorithm;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::support::*;

const ISS: &str = "https://disk.test/";

/// A tmpfs of `size` at `dir`, unmounted on drop.
struct SmallDisk<'a> {
    dir: &'a Path,
}

impl<'a> SmallDisk<'a> {
    fn mount(dir: &'a Path, size: &str) -> Option<Self> {
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|status| status.success());
        mounted.then_some(Self { dir })
    }

    fn resize(&self, size: &str) -> bool {
        Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(self.dir)
            .status()
            .is_ok_and(|status| status.success())
    }
}

impl Drop for SmallDisk<'_> {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.dir).status();
    }
}

async fn revoke(server: &Introspectd, n: usize) -> Result<(), Code> {
    let request = with_key(
        ADMIN_KEY,
        pb::RevokeRequest {
            target: Some(Target::Jti(pb::JtiTarget {
                iss: ISS.into(),
                jti: format!("{n}-{}", "x".repeat(200)),
                exp: None,
            })),
            reason: "r".repeat(250),
        },
    );
    match server.revocation().await.revoke(request).await {
        Ok(_) => Ok(()),
        Err(status) => Err(status.code()),
    }
}

#[tokio::test]
async fn a_full_disk_makes_writes_unavailable_and_the_store_recovers_without_a_restart()
-> TestResult {
    let dir = tempfile::tempdir()?;
    let Some(disk) = SmallDisk::mount(dir.path(), "2m") else {
        if std::env::var("INTROSPECTD_REQUIRE_ALL").is_ok_and(|v| v == "1") {
            unreachable!("cannot mount a tmpfs (needs root) and INTROSPECTD_REQUIRE_ALL=1");
        }
        eprintln!("SKIPPED a_full_disk_...: cannot mount a tmpfs here (needs root)");
        return Ok(());
    };
    let signer = key(Algorithm::ES256, "es");
    let mut file = file_config(vec![IssuerSection {
        jwks_uri: None,
        jwks: Some(introspectd::token::sign::jwks(&[&signer]).to_string()),
        ..issuer_section(ISS, "http://unused", &["ES256"])
    }]);
    file.store = StoreSection {
        backend: StoreBackend::Embedded,
        path: dir.path().join("state.redb"),
        ..StoreSection::default()
    };
    let server = Introspectd::start_ready(file).await;

    let mut refused = None;
    for n in 0..100_000 {
        if let Err(code) = revoke(&server, n).await {
            refused = Some(code);
            break;
        }
    }
    assert_eq!(
        refused,
        Some(Code::Unavailable),
        "a full disk is UNAVAILABLE"
    );
    server.wait_for_health("", ServingStatus::NotServing).await;
    let token = mint(&signer, &claims(ISS));
    assert!(
        server.introspect(&token).await.active,
        "answers go on from memory"
    );

    assert!(disk.resize("64m"), "cannot grow the tmpfs");
    // Not ready, it gets no writes: it finds out by itself that there is room again.
    server.wait_for_health("", ServingStatus::Serving).await;
    eventually("a write to succeed again", || async {
        revoke(&server, 1_000_000).await.is_ok()
    })
    .await;
    // And keeps succeeding.
    for n in 0..10 {
        assert_eq!(revoke(&server, 2_000_000 + n).await, Ok(()));
    }
    drop(server);
    tokio::time::sleep(Duration::from_millis(100)).await;
    Ok(())
}
