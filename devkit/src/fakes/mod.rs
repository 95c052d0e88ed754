//! Fakes for the Azure services the handler reaches through its managed identity: the App
//! Service identity endpoint, Key Vault (HTTPS, 401 challenge, rotation, faults) and the test
//! PKI that lets them — and Azurite in OAuth mode — speak verified TLS on loopback.

pub mod identity;
pub mod keyvault;
pub mod qualtrics;
pub mod sandbox_data;
pub mod servicenow;
pub mod ticket_events;
pub mod ticketing;
pub mod tls;
pub mod wide_data;
pub mod zendesk;

pub use identity::FakeIdentity;
pub use keyvault::{FakeKeyVault, VaultFault};
pub use tls::{PkiFiles, TestPki, TlsListener};
