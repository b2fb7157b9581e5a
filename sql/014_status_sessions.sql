-- The status page's sign-in sessions, held by the server. The cookie was an expiry and an HMAC
-- of it keyed by the API token: a stolen cookie let someone test guesses of the token offline,
-- logging out could not end it, and the client chose its expiry. Now the cookie is a random key
-- and nothing else; the server keeps only its hash, with the hash of the token it was opened
-- with (the session ends when that token is removed from the configuration) and an expiry it
-- sets itself. Logging out deletes the row.

CREATE TABLE status_sessions (
  key_hash    text PRIMARY KEY,      -- SHA-256 of the cookie's key: the key itself is never stored
  token_hash  text NOT NULL,         -- SHA-256 of the API token it was opened with
  created_at  timestamptz NOT NULL DEFAULT now(),
  expires_at  timestamptz NOT NULL
);
COMMENT ON TABLE status_sessions IS 'Signed-in status page sessions; delete a row to end one.';
CREATE INDEX status_sessions_expires ON status_sessions (expires_at);
