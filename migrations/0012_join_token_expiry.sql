-- A cluster's join token is valid for a day (like kubeadm's), so one that
-- leaks from a shell history or a provisioning script stops working. Tokens
-- made before this migration get a day from when they were made.
ALTER TABLE cluster_join_tokens ADD COLUMN expires_at INTEGER NOT NULL DEFAULT 0;
UPDATE cluster_join_tokens SET expires_at = created_at + 86400000;
