//! The layer cache: one extraction per layer under concurrency, digest checks,
//! LRU eviction under a size cap that never takes a layer in use, and reopening.

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use slipway_runner::layer::{CacheError, LayerCache};

/// A gzip layer with one file of `size` bytes; returns (digest, blob).
fn layer(name: &str, size: usize) -> (String, Vec<u8>) {
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(size as u64);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_cksum();
    builder
        .append_data(&mut header, name, &vec![b'x'; size][..])
        .unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&builder.into_inner().unwrap()).unwrap();
    let blob = gz.finish().unwrap();
    (
        format!("sha256:{}", hex::encode(Sha256::digest(&blob))),
        blob,
    )
}

fn reader(
    blob: &[u8],
) -> impl FnOnce() -> std::io::Result<std::io::Cursor<Vec<u8>>> + Send + 'static {
    let blob = blob.to_vec();
    move || Ok(std::io::Cursor::new(blob))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_unpack_once() {
    let dir = tempfile::tempdir().unwrap();
    let cache = LayerCache::open(dir.path(), 1 << 30).unwrap();
    let (digest, blob) = layer("data.bin", 2 << 20);
    let opened = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (cache, digest, blob, opened) =
                (cache.clone(), digest.clone(), blob.clone(), opened.clone());
            tokio::spawn(async move {
                let lease = cache
                    .get(&digest, move || {
                        opened.fetch_add(1, Ordering::SeqCst);
                        Ok(std::io::Cursor::new(blob))
                    })
                    .await
                    .unwrap();
                lease.path().to_owned()
            })
        })
        .collect();
    let mut paths = Vec::new();
    for t in tasks {
        paths.push(t.await.unwrap());
    }
    assert_eq!(
        opened.load(Ordering::SeqCst),
        1,
        "the blob is read once for eight requests"
    );
    assert!(paths.iter().all(|p| p == &paths[0]));
    assert_eq!(
        std::fs::metadata(paths[0].join("data.bin")).unwrap().len(),
        2 << 20
    );
}

#[tokio::test]
async fn a_digest_mismatch_caches_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cache = LayerCache::open(dir.path(), 1 << 30).unwrap();
    let (digest, _) = layer("a", 100);
    let (_, other_blob) = layer("b", 100);
    let err = cache.get(&digest, reader(&other_blob)).await.err().unwrap();
    assert!(matches!(err, CacheError::DigestMismatch { .. }), "{err}");
    assert!(!cache.contains(&digest));
    assert_eq!(
        std::fs::read_dir(dir.path().join("layers"))
            .unwrap()
            .count(),
        0
    );
    assert_eq!(
        std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
        0
    );
    let err = cache
        .get("sha256:nothex", reader(&other_blob))
        .await
        .err()
        .unwrap();
    assert!(matches!(err, CacheError::BadDigest(_)), "{err}");
    // A hostile layer is refused through the cache too, and leaves nothing.
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.as_gnu_mut().unwrap().name[..9].copy_from_slice(b"../escape");
    header.set_size(1);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_cksum();
    builder.append(&header, &b"x"[..]).unwrap();
    let hostile = builder.into_inner().unwrap();
    let hostile_digest = format!("sha256:{}", hex::encode(Sha256::digest(&hostile)));
    let err = cache
        .get(&hostile_digest, reader(&hostile))
        .await
        .err()
        .unwrap();
    assert!(matches!(err, CacheError::Layer { .. }), "{err}");
    assert!(err.to_string().contains("would leave the layer"), "{err}");
    assert_eq!(
        std::fs::read_dir(dir.path().join("layers"))
            .unwrap()
            .count(),
        0
    );
}

#[tokio::test]
async fn least_recently_used_layers_go_first_and_leased_ones_stay() {
    let dir = tempfile::tempdir().unwrap();
    let cache = LayerCache::open(dir.path(), 2500).unwrap();
    let layers: Vec<_> = ["a", "b", "c", "d"]
        .iter()
        .map(|n| layer(n, 1000))
        .collect();
    let get = |i: usize| cache.get(&layers[i].0, reader(&layers[i].1));
    drop(get(0).await.unwrap());
    drop(get(1).await.unwrap());
    drop(get(2).await.unwrap()); // 3000 > 2500: the oldest (a) goes
    assert!(
        !cache.contains(&layers[0].0)
            && cache.contains(&layers[1].0)
            && cache.contains(&layers[2].0)
    );
    drop(get(1).await.unwrap()); // b is now more recent than c
    drop(get(3).await.unwrap()); // c goes
    assert!(
        cache.contains(&layers[1].0)
            && !cache.contains(&layers[2].0)
            && cache.contains(&layers[3].0)
    );
    assert!(cache.total_bytes() <= 2500);

    // Leased layers are never evicted, even over the cap.
    let held_b = get(1).await.unwrap();
    let held_d = get(3).await.unwrap();
    let held_a = get(0).await.unwrap();
    assert!(cache.total_bytes() > 2500, "all three are in use");
    assert!(
        held_a.path().join("a").exists()
            && held_b.path().join("b").exists()
            && held_d.path().join("d").exists()
    );
    drop(held_b);
    assert!(
        cache.total_bytes() <= 2500,
        "released layers are evicted once over the cap"
    );
    assert!(!cache.contains(&layers[1].0));
    drop((held_a, held_d));
}

#[tokio::test]
async fn reopening_indexes_layers_and_drops_unfinished_ones() {
    let dir = tempfile::tempdir().unwrap();
    let (digest, blob) = layer("kept", 500);
    {
        let cache = LayerCache::open(dir.path(), 1 << 30).unwrap();
        drop(cache.get(&digest, reader(&blob)).await.unwrap());
    }
    // Unfinished work of a process that is gone goes; a live one's stays.
    let dead = dead_pid();
    std::fs::create_dir_all(dir.path().join(format!("tmp/abandoned.{dead}/usr"))).unwrap();
    let live = format!("tmp/in-progress.{}", std::process::id());
    std::fs::create_dir_all(dir.path().join(&live)).unwrap();
    // The recorded size is what reopening uses (no walk of the tree).
    let hex = digest.strip_prefix("sha256:").unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.path().join("meta").join(hex)).unwrap(),
        "500"
    );
    let cache = LayerCache::open(dir.path(), 1 << 30).unwrap();
    assert!(cache.contains(&digest));
    assert_eq!(cache.total_bytes(), 500);
    let left: Vec<_> = std::fs::read_dir(dir.path().join("tmp"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(left, vec![live.strip_prefix("tmp/").unwrap().to_owned()]);
    let lease = cache
        .get(&digest, || -> std::io::Result<std::io::Cursor<Vec<u8>>> {
            panic!("cached: not read again")
        })
        .await
        .unwrap();
    assert!(lease.path().join("kept").exists());
}

/// The pid of a process that has exited and been reaped.
fn dead_pid() -> u32 {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

/// Two caches on one directory stand for two processes sharing it (a `flock`
/// belongs to an open file, so the same holds across processes): one's
/// eviction never removes a layer the other holds.
#[tokio::test]
async fn a_layer_leased_by_another_cache_on_the_directory_is_not_evicted() {
    let dir = tempfile::tempdir().unwrap();
    let (held, held_blob) = layer("held", 1000);
    let (other, other_blob) = layer("other", 1000);
    let first = LayerCache::open(dir.path(), 1 << 30).unwrap();
    let lease = first.get(&held, reader(&held_blob)).await.unwrap();

    // The second cache sees the layer, and its cap (1500 bytes) cannot hold both.
    let second = LayerCache::open(dir.path(), 1500).unwrap();
    assert!(second.contains(&held));
    drop(second.get(&other, reader(&other_blob)).await.unwrap());
    assert!(
        lease.path().join("held").exists(),
        "a layer in use by the other cache was evicted"
    );
    // `other` was the only layer it could evict.
    assert!(!second.contains(&other));
    assert!(second.contains(&held));

    // Once released, the next eviction may take it.
    drop(lease);
    drop(second.get(&other, reader(&other_blob)).await.unwrap());
    assert!(!dir.path().join("layers").join(&held[7..]).exists());
    // The first cache notices the layer is gone and unpacks it again.
    let again = first.get(&held, reader(&held_blob)).await.unwrap();
    assert!(again.path().join("held").exists());
}
