-- Kind `kubernetes`: the server drives a Kubernetes API in one namespace
-- with a kubeconfig, sealed like secrets (ChaCha20-Poly1305 under the
-- secrets key, the cluster's name in the associated data). Never stored,
-- logged or returned in the clear.
CREATE TABLE cluster_kubeconfigs (
    cluster_id  INTEGER PRIMARY KEY REFERENCES clusters(id) ON DELETE CASCADE,
    namespace   TEXT NOT NULL,
    nonce       BLOB NOT NULL,
    ciphertext  BLOB NOT NULL,
    updated_by  TEXT NOT NULL,
    updated_at  INTEGER NOT NULL
);
