//! A signing key that rotates: the current and the previous secret, each turned into a
//! ready key once per value (not once per delivery), and one forced re-read when nothing
//! matches, in case the keys were rotated behind the cache. Every verifier that checks a
//! shared-secret signature (Qualtrics today; Zendesk and Standard Webhooks later) uses it,
//! so none of them imports another capability.

use super::{Secret, SecretName, SecretsError, SecretsProvider};
use std::sync::Mutex;

/// The current and previous key of one signature scheme, as ready keys of type `K`.
pub struct RotatingKeys<K> {
    current: SecretName,
    previous: SecretName,
    /// Turns a (non-empty) secret value into a ready key.
    make: fn(&[u8]) -> K,
    cache: Mutex<Vec<(SecretName, Secret, K)>>,
}

impl<K> std::fmt::Debug for RotatingKeys<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RotatingKeys")
            .field("current", &self.current)
            .field("previous", &self.previous)
            .finish_non_exhaustive()
    }
}

/// The keys configured right now, current first.
#[derive(Debug)]
pub struct Keys<K> {
    names: Vec<SecretName>,
    keys: Vec<K>,
}

impl<K> Keys<K> {
    pub fn keys(&self) -> &[K] {
        &self.keys
    }

    /// The secret the `i`-th key was made from.
    pub fn name(&self, i: usize) -> Option<SecretName> {
        self.names.get(i).copied()
    }
}

/// How a signature check against the rotating keys ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Verified<E> {
    /// It matched the key made from this secret.
    Key(SecretName),
    /// It matched no key (after one re-read when that could help).
    Refused(E),
}

impl<K: Clone> RotatingKeys<K> {
    pub fn new(current: SecretName, previous: SecretName, make: fn(&[u8]) -> K) -> Self {
        Self {
            current,
            previous,
            make,
            cache: Mutex::default(),
        }
    }

    /// The ready key for `name`'s current `value`, made (and remembered) on first use; an
    /// empty value is no key (an empty HMAC key would accept anyone who guesses it).
    fn key(&self, name: SecretName, value: Secret) -> Option<K> {
        if value.expose().is_empty() {
            return None;
        }
        let Ok(mut cache) = self.cache.lock() else {
            return Some((self.make)(value.expose().as_bytes()));
        };
        if let Some((_, _, key)) = cache
            .iter()
            .find(|(n, v, _)| *n == name && v.expose() == value.expose())
        {
            return Some(key.clone());
        }
        let key = (self.make)(value.expose().as_bytes());
        cache.retain(|(n, _, _)| *n != name);
        cache.push((name, value, key.clone()));
        Some(key)
    }

    /// The configured keys, current first. A failure to read the current key is the error (a
    /// transient condition); a failure to read the previous one only loses the rotation
    /// grace, and is logged.
    pub async fn keys(&self, secrets: &SecretsProvider) -> Result<Keys<K>, SecretsError> {
        let (mut names, mut keys) = (Vec::with_capacity(2), Vec::with_capacity(2));
        for name in [self.current, self.previous] {
            match secrets.get(name).await {
                Ok(Some(s)) => {
                    if let Some(key) = self.key(name, s) {
                        keys.push(key);
                        names.push(name);
                    }
                }
                Ok(None) => {}
                Err(e) if name == self.current => return Err(e),
                Err(e) => {
                    tracing::warn!(secret = %name, error = %e, "previous key unavailable")
                }
            }
        }
        Ok(Keys { names, keys })
    }

    /// Checks with `check` (the index of the matching key, or why none matched). When nothing
    /// matched and `worth_rereading` says a rotated key could fix it, forces one re-read of
    /// both secrets (rate-limited by the provider) and checks again.
    pub async fn verify<E>(
        &self,
        secrets: &SecretsProvider,
        check: impl Fn(&[K]) -> Result<usize, E>,
        worth_rereading: impl Fn(&E) -> bool,
    ) -> Result<Verified<E>, SecretsError> {
        let keys = self.keys(secrets).await?;
        let first = match check(keys.keys()) {
            Ok(i) => return Ok(self.matched(&keys, i)),
            Err(e) => e,
        };
        if !worth_rereading(&first) {
            return Ok(Verified::Refused(first));
        }
        let mut reread = false;
        for name in [self.current, self.previous] {
            reread |= matches!(secrets.refresh(name).await, Ok(true));
        }
        if !reread {
            return Ok(Verified::Refused(first));
        }
        let keys = self.keys(secrets).await?;
        Ok(match check(keys.keys()) {
            Ok(i) => self.matched(&keys, i),
            Err(e) => Verified::Refused(e),
        })
    }

    fn matched<E>(&self, keys: &Keys<K>, i: usize) -> Verified<E> {
        // `check` returns an index into `keys`, so the fallback is never taken.
        Verified::Key(keys.name(i).unwrap_or(self.current))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key is its secret's bytes, so a check can say which value it was made from.
    fn keys() -> RotatingKeys<Vec<u8>> {
        RotatingKeys::new(
            SecretName::ZendeskApiToken,
            SecretName::ServicenowPassword,
            |b| b.to_vec(),
        )
    }

    fn check(want: &'static [u8]) -> impl Fn(&[Vec<u8>]) -> Result<usize, &'static str> {
        move |keys| keys.iter().position(|k| k == want).ok_or("mismatch")
    }

    /// The only test touching these two variables (secrets come from the environment here).
    #[tokio::test]
    async fn current_previous_one_reread_and_no_empty_key() {
        let (current, previous) = ("ZENDESK_API_TOKEN", "SERVICENOW_PASSWORD");
        std::env::set_var(current, "k1");
        std::env::set_var(previous, "k0");
        let secrets = SecretsProvider::from_env();
        let rotating = keys();
        let any = |_: &&str| true;
        let v = rotating.verify(&secrets, check(b"k1"), any).await.unwrap();
        assert_eq!(v, Verified::Key(SecretName::ZendeskApiToken));
        let v = rotating.verify(&secrets, check(b"k0"), any).await.unwrap();
        assert_eq!(v, Verified::Key(SecretName::ServicenowPassword));

        // Rotated behind the cache: a mismatch re-reads once and then matches.
        std::env::set_var(current, "k2");
        let v = rotating.verify(&secrets, check(b"k2"), any).await.unwrap();
        assert_eq!(v, Verified::Key(SecretName::ZendeskApiToken));
        // A refusal the check says no key could fix is not worth a re-read.
        std::env::set_var(current, "k3");
        let none = |_: &&str| false;
        let v = rotating.verify(&secrets, check(b"k3"), none).await.unwrap();
        assert_eq!(v, Verified::Refused("mismatch"));

        // An empty value is no key: never made, so nothing can match it (whether or not the
        // source reports an empty secret as absent).
        let rotating = keys();
        assert_eq!(
            rotating.key(SecretName::ZendeskApiToken, Secret::new("")),
            None
        );
        std::env::set_var(current, "");
        std::env::set_var(previous, "k0");
        let secrets = SecretsProvider::from_env();
        let got = rotating.keys(&secrets).await.unwrap();
        assert_eq!(got.keys(), [b"k0".to_vec()]);
        assert_eq!(got.name(0), Some(SecretName::ServicenowPassword));
        let v = rotating.verify(&secrets, check(b""), any).await.unwrap();
        assert_eq!(v, Verified::Refused("mismatch"));
        std::env::remove_var(current);
        std::env::remove_var(previous);
    }
}
