//! Release upload and artifact serving through the real `swell-controller`: what is accepted,
//! what is refused (with a clear 4xx and nothing stored), Range downloads, and durability
//! across a kill -9.

// Helpers outside #[test] functions panic on the unexpected, like the tests themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod service_support;

use service_support::*;
use swell_proto::{Sha256Digest, Timestamp};

/// The artifact directory holds only `tmp/` (empty) and these digests' files.
fn assert_artifacts(fx: &Fixture, digests: &[Sha256Digest]) {
    let dir = fx.data_dir().join("artifacts");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut expected: Vec<String> = digests.iter().map(|d| d.to_hex()).collect();
    expected.push("tmp".into());
    expected.sort();
    assert_eq!(names, expected);
    assert_eq!(
        std::fs::read_dir(dir.join("tmp")).unwrap().count(),
        0,
        "temporary files left"
    );
}

fn releases(c: &Controller) -> Vec<serde_json::Value> {
    c.get_json("/v1/releases", VIEWER_TOKEN)["releases"]
        .as_array()
        .unwrap()
        .clone()
}

/// An operator uploads a signed manifest (staged, not yet a release), then the image (the
/// release is accepted); the artifact downloads whole, by range, from an offset, and from the
/// end, with ETag and lengths; a range past the end is 416.
#[test]
fn upload_then_download_with_and_without_range() {
    let fx = Fixture::new();
    let c = fx.start();
    let img = image(3 * 1024 * 1024 + 17, 1);
    let digest = Sha256Digest::of(&img);
    let doc = release_doc("gateway-os", "1.4.2", &img);
    let m = manifest(&doc, now().plus_secs(86_400), &[&fx.keys.release]);

    let staged = c
        .request(
            "PUT",
            "/v1/releases/gateway-os/1.4.2/manifest",
            Some(OPERATOR_TOKEN),
        )
        .send(&m);
    assert_eq!(staged.status, 202, "{}", staged.text());
    assert_eq!(staged.json()["status"], "staged");
    assert_eq!(staged.json()["missing"], serde_json::json!(["rootfs"]));
    assert!(
        releases(&c).is_empty(),
        "a staged manifest is not a release"
    );
    let early = c
        .request("GET", &format!("/v1/artifacts/{digest}"), None)
        .send(&[]);
    early.assert_error(404, "no artifact");

    let accepted = c
        .request(
            "PUT",
            "/v1/releases/gateway-os/1.4.2/image",
            Some(OPERATOR_TOKEN),
        )
        .send_chunked(&img);
    assert_eq!(accepted.status, 201, "{}", accepted.text());
    let release = &accepted.json()["release"];
    assert_eq!(release["name"], "gateway-os");
    assert_eq!(release["version"], "1.4.2");
    assert_eq!(release["accepted_by"], "olga");
    assert_eq!(release["artifacts"][0]["sha256"], digest.to_hex());
    let url = release["artifacts"][0]["url"].as_str().unwrap();
    assert_eq!(url, format!("{}/v1/artifacts/{digest}", c.http));

    let shown = c.get_json("/v1/releases/gateway-os/1.4.2", VIEWER_TOKEN);
    assert_eq!(shown["manifest_digest"], release["manifest_digest"]);
    let stored = c.get("/v1/releases/gateway-os/1.4.2/manifest", VIEWER_TOKEN);
    assert_eq!(stored.body, m, "the signed manifest is served as uploaded");

    let path = format!("/v1/artifacts/{digest}");
    let whole = c.request("GET", &path, None).send(&[]);
    assert_eq!(whole.status, 200);
    assert_eq!(whole.body, img);
    assert_eq!(whole.header("etag"), Some(format!("\"{digest}\"").as_str()));
    assert_eq!(whole.header("accept-ranges"), Some("bytes"));
    assert_eq!(
        whole.header("content-length"),
        Some(img.len().to_string().as_str())
    );

    let len = img.len();
    for (range, start, end) in [
        ("bytes=0-99".to_owned(), 0, 99),
        (format!("bytes={}-", len - 1000), len - 1000, len - 1),
        ("bytes=-10".to_owned(), len - 10, len - 1),
        (format!("bytes=1048570-{}", len + 50), 1_048_570, len - 1),
    ] {
        let part = c
            .request("GET", &path, None)
            .header("Range", &range)
            .send(&[]);
        assert_eq!(part.status, 206, "{range}");
        assert_eq!(part.body, img[start..=end], "{range}");
        assert_eq!(
            part.header("content-range"),
            Some(format!("bytes {start}-{end}/{len}").as_str()),
            "{range}"
        );
        assert_eq!(
            part.header("content-length"),
            Some((end - start + 1).to_string().as_str())
        );
    }
    let past = c
        .request("GET", &path, None)
        .header("Range", &format!("bytes={len}-"))
        .send(&[]);
    assert_eq!(past.status, 416);
    assert_eq!(
        past.header("content-range"),
        Some(format!("bytes */{len}").as_str())
    );
    // If-Range with another ETag: the range does not apply, the whole artifact comes back.
    let stale = c
        .request("GET", &path, None)
        .header("Range", "bytes=0-9")
        .header("If-Range", "\"something-else\"")
        .send(&[]);
    assert_eq!(stale.status, 200);
    assert_eq!(stale.body.len(), len);
    let head = c.request("HEAD", &path, None).send(&[]);
    assert_eq!(head.status, 200);
    assert_eq!(
        head.header("content-length"),
        Some(len.to_string().as_str())
    );
    c.request("GET", "/v1/artifacts/not-a-digest", None)
        .send(&[])
        .assert_error(400, "SHA-256");
    assert_artifacts(&fx, &[digest]);
    assert_eq!(c.metric("swell_releases"), 1);
}

/// Every bad upload is refused with a clear 4xx, and leaves no release, no artifact, no
/// temporary file and no audit entry behind.
#[test]
fn bad_uploads_are_refused_and_nothing_is_stored() {
    let fx = Fixture::new();
    let c = fx.start();
    let img = image(64 * 1024, 2);
    let doc = release_doc("gateway-os", "2.0.0", &img);
    let later = now().plus_secs(86_400);
    let good = manifest(&doc, later, &[&fx.keys.release]);
    let put_manifest = |token: Option<&str>, body: &[u8]| {
        c.request("PUT", "/v1/releases/gateway-os/2.0.0/manifest", token)
            .send(body)
    };
    let audit_len = || {
        c.get_json("/v1/audit", VIEWER_TOKEN)["entries"]
            .as_array()
            .unwrap()
            .len()
    };
    let entries_before = audit_len();

    // Who may upload.
    put_manifest(None, &good).assert_error(401, "missing bearer token");
    put_manifest(Some("swell_wrong"), &good).assert_error(401, "unknown token");
    put_manifest(Some(VIEWER_TOKEN), &good).assert_error(403, "needs operator");

    // What may be uploaded.
    put_manifest(Some(OPERATOR_TOKEN), b"{not json").assert_error(400, "malformed JSON");
    let oversized = vec![b' '; swell_proto::limits::MAX_DOCUMENT_BYTES + 1];
    assert_eq!(put_manifest(Some(OPERATOR_TOKEN), &oversized).status, 413);
    put_manifest(Some(OPERATOR_TOKEN), &manifest(&doc, later, &[]))
        .assert_error(422, "threshold unmet");
    put_manifest(
        Some(OPERATOR_TOKEN),
        &manifest(&doc, later, &[&fx.keys.other]),
    )
    .assert_error(422, "not a key of the release role");
    let tampered = String::from_utf8(good.clone())
        .unwrap()
        .replace("\"security_version\":1", "\"security_version\":9");
    assert_ne!(tampered.as_bytes(), good.as_slice());
    put_manifest(Some(OPERATOR_TOKEN), tampered.as_bytes()).assert_error(422, "bad signature");
    let expired = manifest(
        &doc,
        Timestamp::from_unix(1_700_000_000),
        &[&fx.keys.release],
    );
    put_manifest(Some(OPERATOR_TOKEN), &expired).assert_error(422, "expired");
    put_manifest(Some(OPERATOR_TOKEN), &fx.keys.root_json())
        .assert_error(422, "wrong document type");
    let mut unknown: serde_json::Value = serde_json::from_slice(&good).unwrap();
    unknown["signed"]["colour"] = "blue".into();
    put_manifest(Some(OPERATOR_TOKEN), &serde_json::to_vec(&unknown).unwrap())
        .assert_error(400, "colour");
    c.request(
        "PUT",
        "/v1/releases/gateway-os/2.0.1/manifest",
        Some(OPERATOR_TOKEN),
    )
    .send(&good)
    .assert_error(400, "not gateway-os 2.0.1");
    c.request(
        "PUT",
        "/v1/releases/gateway-os/2.0.0/image",
        Some(OPERATOR_TOKEN),
    )
    .send(&img)
    .assert_error(404, "no manifest is staged");
    assert_eq!(
        audit_len(),
        entries_before,
        "refusals are not audited as changes"
    );

    // Staged, then images that do not match.
    assert_eq!(put_manifest(Some(OPERATOR_TOKEN), &good).status, 202);
    let put_image = |body: &[u8], chunked: bool| {
        let r = c.request(
            "PUT",
            "/v1/releases/gateway-os/2.0.0/image",
            Some(OPERATOR_TOKEN),
        );
        if chunked {
            r.send_chunked(body)
        } else {
            r.send(body)
        }
    };
    let mut wrong = img.clone();
    wrong[100] ^= 1;
    put_image(&wrong, false).assert_error(422, "digest mismatch");
    put_image(&wrong, true).assert_error(422, "digest mismatch");
    put_image(&img[..img.len() - 1], false).assert_error(400, "Content-Length");
    put_image(&img[..img.len() - 1], true).assert_error(422, "size mismatch");
    let mut longer = img.clone();
    longer.push(0);
    put_image(&longer, true).assert_error(413, "larger than");
    c.request(
        "PUT",
        "/v1/releases/gateway-os/2.0.0/image?target=mcu",
        Some(OPERATOR_TOKEN),
    )
    .send(&img)
    .assert_error(404, "no artifact for target mcu");
    c.request(
        "PUT",
        "/v1/releases/gateway-os/2.0.0/image?colour=blue",
        Some(OPERATOR_TOKEN),
    )
    .send(&img)
    .assert_error(400, "unknown query parameter");
    assert!(releases(&c).is_empty());
    assert_artifacts(&fx, &[]);
    assert_eq!(c.metric("swell_uploads_total{result=\"refused\"}"), 15);

    // The right image is still accepted after all that; a second upload of the same release
    // revision is a conflict.
    assert_eq!(put_image(&img, false).status, 201);
    assert_eq!(releases(&c).len(), 1);
    put_manifest(Some(OPERATOR_TOKEN), &good).assert_error(409, "already exists");
}

/// Devices, releases and audit entries survive a kill -9; the audit log verifies, and after
/// an entry is modified in the store, or deleted, verification names it.
#[test]
fn state_survives_kill_and_audit_tampering_is_detected() {
    let fx = Fixture::new();
    let c = fx.start();
    let img = image(10_000, 3);
    let digest = Sha256Digest::of(&img);
    upload(
        &c,
        "gateway-os",
        "3.1.0",
        &manifest(
            &release_doc("gateway-os", "3.1.0", &img),
            now().plus_secs(86_400),
            &[&fx.keys.release],
        ),
        &img,
    );
    let key = swell_proto::keys::pem::public_key_to_pem(&Keys::public(&fx.keys.other)).unwrap();
    let r = c.post_json(
        "/v1/devices",
        OPERATOR_TOKEN,
        &serde_json::json!({"id": "gw-1", "public_key": key, "hardware": "gw-x86", "zone": "Europe/Berlin"}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let before = c.get_json("/v1/audit", VIEWER_TOKEN)["entries"].clone();
    let actions: Vec<&str> = before
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "controller.start",
            "release.stage",
            "release.accept",
            "device.provision"
        ]
    );
    c.kill();

    let c = fx.start();
    assert_eq!(
        c.get_json("/v1/releases", VIEWER_TOKEN)["releases"][0]["version"],
        "3.1.0"
    );
    assert_eq!(
        c.get_json("/v1/devices/gw-1", VIEWER_TOKEN)["zone"],
        "Europe/Berlin"
    );
    let whole = c
        .request("GET", &format!("/v1/artifacts/{digest}"), None)
        .send(&[]);
    assert_eq!(whole.body, img);
    let after = c.get_json("/v1/audit", VIEWER_TOKEN)["entries"].clone();
    assert_eq!(
        after.as_array().unwrap()[..4],
        before.as_array().unwrap()[..]
    );
    assert_eq!(after[4]["action"], "controller.start");
    let v = c.get_json("/v1/audit/verify", VIEWER_TOKEN);
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["entries"], 5);
    c.kill();

    // Tamper with the store while the controller is down: change entry 3's details.
    use swell_controller::store::{Batch, Engine, Table};
    let store_path = fx.data_dir().join("state.redb");
    let edit = |f: &dyn Fn(&dyn swell_controller::store::Store)| {
        let store = Engine::Redb.open(&store_path).unwrap();
        f(store.as_ref());
    };
    edit(&|s| {
        let key = format!("{:020}", 3).into_bytes();
        let text = String::from_utf8(s.get(Table::Audit, &key).unwrap().unwrap()).unwrap();
        let forged = text.replace("\"olga\"", "\"mallory\"");
        assert_ne!(forged, text);
        let mut b = Batch::new();
        b.put(Table::Audit, key, forged.into_bytes());
        s.commit(&b).unwrap();
    });
    let c = fx.start();
    let v = c.get_json("/v1/audit/verify", VIEWER_TOKEN);
    assert_eq!(v["ok"], false);
    assert_eq!(v["problems"][0]["seq"], 3, "{v}");
    assert_eq!(v["problems"][0]["kind"], "modified", "{v}");
    c.kill();

    // Delete entry 4 instead (after restoring 3).
    let original3 = serde_json::to_vec(&before[2]).unwrap();
    let canonical3 = swell_proto::json::parse(&original3).unwrap().to_canonical();
    edit(&|s| {
        let mut b = Batch::new();
        b.put(
            Table::Audit,
            format!("{:020}", 3).into_bytes(),
            canonical3.clone(),
        )
        .delete(Table::Audit, format!("{:020}", 4).into_bytes());
        s.commit(&b).unwrap();
    });
    let c = fx.start();
    let v = c.get_json("/v1/audit/verify", VIEWER_TOKEN);
    assert_eq!(v["ok"], false);
    let problems = v["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{v}");
    assert_eq!(problems[0]["seq"], 4);
    assert_eq!(problems[0]["kind"], "deleted");
}
