//! The runner's image pull against the real registry: layers land unpacked in the
//! cache, concurrent pulls download each layer once, tampered content and bad
//! credentials are refused.

mod common;

use std::sync::Arc;

use common::*;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use slipway_runner::image::{pull, resolve, PullError};
use slipway_runner::layer::LayerCache;

fn client() -> oci_client::Client {
    oci_client::Client::new(ClientConfig {
        protocol: ClientProtocol::Http,
        ..Default::default()
    })
}

fn sent_bytes(server: &TestServer) -> u64 {
    let text = String::from_utf8(
        server
            .request(reqwest::Method::GET, "/metrics", &[], None)
            .body,
    )
    .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("slipway_registry_sent_bytes_total "))
        .unwrap()
        .parse()
        .unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn pull_unpacks_layers_verifies_and_downloads_each_layer_once() {
    let server = TestServer::start();
    let scratch = scratch_dir("pull");
    let layout = OciLayout::write(
        &scratch.path().join("img"),
        "v1",
        &[(Compression::Gzip, 300_000), (Compression::None, 200_000)],
    );
    server.push_layout_http(&layout, "team/app", "v1", &server.admin_auth());
    let auth = RegistryAuth::Basic("admin".into(), server.admin_password().into());
    let reference = resolve("team/app:v1", server.host_port()).unwrap();
    let rt = runtime();

    // One pull: the manifest digest, the config and every file of every layer.
    let cache = LayerCache::open(scratch.path().join("cache1"), 1 << 30).unwrap();
    let image = rt
        .block_on(pull(&client(), &reference, &auth, &cache))
        .unwrap();
    assert_eq!(image.manifest_digest, layout.manifest_digest);
    assert_eq!(image.layers.len(), 2);
    assert_eq!(image.config.rootfs().diff_ids().len(), 2);
    for (lease, info) in image.layers.iter().zip(&layout.layers) {
        assert!(cache.contains(&info.digest));
        for (path, content) in &info.files {
            assert!(
                std::fs::read(lease.path().join(path)).unwrap() == *content,
                "{path} in layer {}",
                info.digest
            );
        }
    }
    drop(image);

    // Four concurrent pulls into a fresh cache download each layer once.
    let cache = LayerCache::open(scratch.path().join("cache2"), 1 << 30).unwrap();
    let before = sent_bytes(&server);
    let client = Arc::new(client());
    let images = rt.block_on(async {
        let pulls: Vec<_> = (0..4)
            .map(|_| {
                let (client, reference, auth, cache) = (
                    client.clone(),
                    reference.clone(),
                    auth.clone(),
                    cache.clone(),
                );
                tokio::spawn(async move { pull(&client, &reference, &auth, &cache).await })
            })
            .collect();
        let mut out = Vec::new();
        for p in pulls {
            out.push(p.await.unwrap().unwrap());
        }
        out
    });
    let layer_bytes: u64 = layout.layers.iter().map(|l| l.data.len() as u64).sum();
    let per_pull = (layout.manifest_bytes.len() + layout.config_bytes.len()) as u64;
    assert_eq!(
        sent_bytes(&server) - before,
        layer_bytes + 4 * per_pull,
        "layers went over the wire once"
    );
    assert!(images
        .iter()
        .all(|i| i.layers[0].path() == images[0].layers[0].path()));
    drop(images);

    // Wrong credentials: a clear refusal. (A fresh client: oci-client keeps the
    // token it already has for a registry.)
    let bad = RegistryAuth::Basic("admin".into(), "wrong".into());
    let cache3 = LayerCache::open(scratch.path().join("cache3"), 1 << 30).unwrap();
    let err = rt
        .block_on(pull(&self::client(), &reference, &bad, &cache3))
        .err()
        .unwrap();
    assert!(matches!(err, PullError::Registry { .. }), "{err}");

    // Content that does not match its digest is never cached.
    let victim = &layout.layers[1];
    let blob = server
        .data_dir()
        .join("registry/blobs/sha256")
        .join(&digest_hex(&victim.digest)[..2])
        .join(digest_hex(&victim.digest));
    let mut bytes = std::fs::read(&blob).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&blob, &bytes).unwrap();
    let err = rt
        .block_on(pull(&client, &reference, &auth, &cache3))
        .err()
        .unwrap();
    assert!(err.to_string().to_lowercase().contains("digest"), "{err}");
    assert!(!cache3.contains(&victim.digest));
}
