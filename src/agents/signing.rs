//! Each agent's own signing secret (Standard Webhooks), and how erp-sync keeps it.
//!
//! * Registration and rotation hand the agent `whsec_<base64 of 32 random bytes>` once; the
//!   decoded bytes are the HMAC-SHA256 key of every call erp-sync makes to that agent, so any
//!   Standard Webhooks library verifies them and no agent can forge calls to another.
//! * erp-sync must sign with it later, so it cannot keep only a hash: the key is sealed with
//!   XChaCha20-Poly1305 under a key derived (HKDF-SHA256) from `AGENT_SECRET`, bound to the
//!   vendor id. A database dump alone reveals no signing secret.
//! * Rotating `AGENT_SECRET` does not invalidate agents' secrets: with the former value in
//!   `AGENT_SECRET_PREVIOUS`, sealed secrets still open and are re-sealed under the new key at
//!   start-up (see docs/auth.md).

use base64::Engine;
use chacha20poly1305::{
    KeyInit, XChaCha20Poly1305, XNonce,
    aead::{Aead, Payload},
};
use hmac::{Hmac, Mac};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretSlice, SecretString};
use sha2::{Digest, Sha256};

pub const SECRET_PREFIX: &str = "whsec_";
const SECRET_BYTES: usize = 32;
const SEAL_VERSION: u8 = 1;
const KEY_ID_LEN: usize = 8;
const NONCE_LEN: usize = 24;

/// A fresh signing secret: what the agent is given (`whsec_…`) and the raw key erp-sync seals.
pub struct NewSigningSecret {
    pub whsec: SecretString,
    pub key: SecretSlice<u8>,
}

pub fn generate_secret() -> NewSigningSecret {
    let mut key = vec![0u8; SECRET_BYTES];
    rand::rng().fill_bytes(&mut key);
    let whsec = format!(
        "{SECRET_PREFIX}{}",
        base64::engine::general_purpose::STANDARD.encode(&key)
    );
    NewSigningSecret {
        whsec: SecretString::from(whsec),
        key: SecretSlice::from(key),
    }
}

/// The keys an outbound call is signed with.
pub enum SigningKeys {
    /// An agent with its own secret, and during a rotation's grace period also the one it
    /// had: both signatures go out, so the agent verifies whichever it holds.
    Own {
        current: SecretSlice<u8>,
        previous: Option<SecretSlice<u8>>,
    },
    /// An agent registered before per-agent secrets: the shared `AGENT_SECRET` (its UTF-8
    /// bytes) signs, and is sent as the bearer token, until the agent is rotated.
    Legacy(SecretString),
}

impl SigningKeys {
    /// `webhook-signature`: `v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`, one
    /// per key, space-separated (Standard Webhooks).
    pub fn signature(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        match self {
            Self::Own { current, previous } => {
                let mut header = sign(current.expose_secret(), id, timestamp, body);
                if let Some(previous) = previous {
                    header.push(' ');
                    header.push_str(&sign(previous.expose_secret(), id, timestamp, body));
                }
                header
            }
            Self::Legacy(shared) => sign(shared.expose_secret().as_bytes(), id, timestamp, body),
        }
    }

    /// The bearer token to send, if any: only legacy agents get one (the shared secret).
    pub fn legacy_bearer(&self) -> Option<&str> {
        match self {
            Self::Legacy(shared) => Some(shared.expose_secret()),
            Self::Own { .. } => None,
        }
    }
}

/// One Standard Webhooks signature.
pub fn sign(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    )
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    #[error(
        "the agent's signing secret is sealed under a master key this process does not have (AGENT_SECRET changed without AGENT_SECRET_PREVIOUS?)"
    )]
    UnknownKey,
    #[error("the agent's signing secret is damaged or belongs to another vendor")]
    Damaged,
}

/// Seals and opens agents' signing secrets with keys derived from `AGENT_SECRET` (first, the
/// one new secrets are sealed with) and `AGENT_SECRET_PREVIOUS`.
#[derive(Clone)]
pub struct Sealer {
    keys: Vec<MasterKey>,
}

#[derive(Clone)]
struct MasterKey {
    id: [u8; KEY_ID_LEN],
    cipher: XChaCha20Poly1305,
}

impl MasterKey {
    fn derive(master: &SecretString) -> Self {
        let hkdf = hkdf::Hkdf::<Sha256>::new(Some(b"erp-sync"), master.expose_secret().as_bytes());
        let mut key = [0u8; 32];
        hkdf.expand(b"agent signing secret sealing v1", &mut key)
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        // Names the key in each sealed value without revealing anything about it.
        let digest = Sha256::new()
            .chain_update(b"erp-sync sealing key id")
            .chain_update(key)
            .finalize();
        let mut id = [0u8; KEY_ID_LEN];
        id.copy_from_slice(&digest[..KEY_ID_LEN]);
        let cipher = XChaCha20Poly1305::new_from_slice(&key).expect("the key is 32 bytes");
        key.fill(0);
        Self { id, cipher }
    }
}

impl Sealer {
    pub fn new(current: &SecretString, previous: Option<&SecretString>) -> Self {
        let mut keys = vec![MasterKey::derive(current)];
        keys.extend(previous.map(MasterKey::derive));
        Self { keys }
    }

    /// `None` without `AGENT_SECRET`: no agent can be given a secret, nor called.
    pub fn from_settings(settings: &crate::config::Settings) -> Option<Self> {
        let current = settings.agent_secret.as_ref()?;
        Some(Self::new(current, settings.agent_secret_previous.as_ref()))
    }

    /// `version | key id | nonce | ciphertext+tag`, the vendor id as associated data.
    pub fn seal(&self, vendor_id: &str, key: &SecretSlice<u8>) -> Vec<u8> {
        let master = &self.keys[0];
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let ciphertext = master
            .cipher
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: key.expose_secret(),
                    aad: vendor_id.as_bytes(),
                },
            )
            .expect("XChaCha20-Poly1305 seals 32 bytes");
        let mut sealed = Vec::with_capacity(1 + KEY_ID_LEN + NONCE_LEN + ciphertext.len());
        sealed.push(SEAL_VERSION);
        sealed.extend_from_slice(&master.id);
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&ciphertext);
        sealed
    }

    pub fn open(&self, vendor_id: &str, sealed: &[u8]) -> Result<SecretSlice<u8>, SealError> {
        let header = 1 + KEY_ID_LEN + NONCE_LEN;
        if sealed.len() <= header || sealed[0] != SEAL_VERSION {
            return Err(SealError::Damaged);
        }
        let master = self
            .keys
            .iter()
            .find(|k| k.id[..] == sealed[1..1 + KEY_ID_LEN])
            .ok_or(SealError::UnknownKey)?;
        let nonce: [u8; NONCE_LEN] = sealed[1 + KEY_ID_LEN..header]
            .try_into()
            .map_err(|_| SealError::Damaged)?;
        master
            .cipher
            .decrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: &sealed[header..],
                    aad: vendor_id.as_bytes(),
                },
            )
            .map(SecretSlice::from)
            .map_err(|_| SealError::Damaged)
    }

    /// Sealed under a key other than the current one: to be re-sealed.
    pub fn is_stale(&self, sealed: &[u8]) -> bool {
        sealed.get(1..1 + KEY_ID_LEN) != Some(&self.keys[0].id[..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn master(value: &str) -> SecretString {
        SecretString::from(value.to_owned())
    }

    #[test]
    fn a_sealed_secret_opens_only_for_its_vendor_and_survives_a_master_rotation() {
        let secret = generate_secret();
        assert!(secret.whsec.expose_secret().starts_with("whsec_"));
        let old = Sealer::new(&master("old-master-secret-0123"), None);
        let sealed = old.seal("vendor-a", &secret.key);
        assert_eq!(
            old.open("vendor-a", &sealed).unwrap().expose_secret(),
            secret.key.expose_secret()
        );
        assert_eq!(
            old.open("vendor-b", &sealed).unwrap_err(),
            SealError::Damaged
        );

        let rotated = Sealer::new(
            &master("new-master-secret-0123"),
            Some(&master("old-master-secret-0123")),
        );
        assert!(rotated.is_stale(&sealed));
        assert!(rotated.open("vendor-a", &sealed).is_ok());
        let resealed = rotated.seal("vendor-a", &rotated.open("vendor-a", &sealed).unwrap());
        assert!(!rotated.is_stale(&resealed));

        let forgotten = Sealer::new(&master("new-master-secret-0123"), None);
        assert_eq!(
            forgotten.open("vendor-a", &sealed).unwrap_err(),
            SealError::UnknownKey
        );
    }
}
