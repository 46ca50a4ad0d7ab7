//! Groups: the membership every member keeps, and the rules for accepting a change to it.
//!
//! A change travels as the whole new state ([`GroupState`]), signed by the member who makes it
//! ([`SignedGroupState`]). A member accepts it when the version is newer than what it holds and either
//! the signer is an admin in the state it holds, or the change only removes the signer (leaving). A
//! member who does not know the group yet accepts it when the signer is an admin of the new state and
//! the member is in it. Missed changes do not matter: the newest state a member accepts replaces its
//! own.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::{Number, PublicKey, SignatureBytes};

/// Longest group name, in bytes.
pub const MAX_GROUP_NAME_LEN: usize = 100;
/// Most members in a group.
pub const MAX_GROUP_MEMBERS: usize = 256;

const GROUP_CONTEXT: &[u8] = b"whatsap2p/1 group state";

/// A group's id: 128 random bits, shown as 32 hex digits; on the wire 16 raw bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct GroupId(#[serde(with = "crate::text::hex_array")] pub [u8; 16]);

impl GroupId {
    /// A fresh random id.
    pub fn random() -> Self {
        Self(rand::random())
    }
}

impl fmt::Display for GroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for GroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GroupId({self})")
    }
}

impl FromStr for GroupId {
    type Err = hex::FromHexError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 16];
        hex::decode_to_slice(s.trim(), &mut out)?;
        Ok(Self(out))
    }
}

/// What every member keeps about a group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupState {
    /// The group.
    pub id: GroupId,
    /// Its name, at most [`MAX_GROUP_NAME_LEN`] bytes.
    pub name: String,
    /// Everyone in it, admins included.
    pub members: BTreeSet<Number>,
    /// Who may change it.
    pub admins: BTreeSet<Number>,
    /// Grows by one with every change.
    pub version: u64,
}

/// A group state, signed by the member who made it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedGroupState {
    /// The new state.
    pub state: GroupState,
    /// Who made the change.
    pub signer: Number,
    /// The signer's identity key.
    pub signer_key: PublicKey,
    /// Ed25519 signature over the context, the signer and the encoded state.
    pub signature: SignatureBytes,
}

/// Why a group change is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GroupError {
    /// The signature does not verify.
    #[error("signature does not verify")]
    BadSignature,
    /// The change arrived from someone other than its signer, or with another key.
    #[error("signed by {signer}, but it came from {from}")]
    NotFromSigner {
        /// The signer.
        signer: Number,
        /// Who sent it.
        from: Number,
    },
    /// The signer may not make this change.
    #[error("{0} is not an admin of the group")]
    NotAdmin(Number),
    /// Not newer than the state held.
    #[error("version {got} is not newer than {have}")]
    Stale {
        /// Version received.
        got: u64,
        /// Version held.
        have: u64,
    },
    /// The state is malformed.
    #[error("invalid group: {0}")]
    Invalid(&'static str),
    /// We are not in a group we do not know.
    #[error("an invitation to a group we are not in")]
    NotInvited,
}

/// The exact bytes a [`SignedGroupState`] signs: the context `whatsap2p/1 group state` (23 bytes of
/// ASCII), the signer's number as ASCII, a zero byte, and the state's postcard encoding.
pub fn signed_bytes(state: &GroupState, signer: &Number) -> Vec<u8> {
    let mut m = GROUP_CONTEXT.to_vec();
    m.extend_from_slice(signer.as_str().as_bytes());
    m.push(0);
    // Encoding a plain struct of bounded fields cannot fail.
    m.extend_from_slice(&postcard::to_allocvec(state).unwrap_or_default());
    m
}

impl GroupState {
    /// Checks the limits and that admins are members.
    pub fn check(&self) -> Result<(), GroupError> {
        if self.name.is_empty() || self.name.len() > MAX_GROUP_NAME_LEN {
            return Err(GroupError::Invalid("name must be 1 to 100 bytes"));
        }
        if self.members.len() > MAX_GROUP_MEMBERS {
            return Err(GroupError::Invalid("too many members"));
        }
        if !self.admins.is_subset(&self.members) {
            return Err(GroupError::Invalid("an admin is not a member"));
        }
        Ok(())
    }

    /// Signs this state as `signer`.
    pub fn sign(self, signer: Number, key: &SigningKey) -> SignedGroupState {
        let sig = key.sign(&signed_bytes(&self, &signer));
        SignedGroupState {
            state: self,
            signer,
            signer_key: PublicKey(key.verifying_key().to_bytes()),
            signature: SignatureBytes::from_bytes(sig.to_bytes()),
        }
    }
}

impl SignedGroupState {
    /// Decides whether `me` accepts this change, received over a link authenticated as `from` with
    /// identity key `from_key`, given the state `held` (if any).
    pub fn accept(
        &self,
        held: Option<&GroupState>,
        from: &Number,
        from_key: &PublicKey,
        me: &Number,
    ) -> Result<(), GroupError> {
        if self.signer != *from || self.signer_key != *from_key {
            return Err(GroupError::NotFromSigner { signer: self.signer.clone(), from: from.clone() });
        }
        let vk = VerifyingKey::from_bytes(&self.signer_key.0).map_err(|_| GroupError::BadSignature)?;
        vk.verify_strict(
            &signed_bytes(&self.state, &self.signer),
            &Signature::from_bytes(&self.signature.to_bytes()),
        )
        .map_err(|_| GroupError::BadSignature)?;
        let new = &self.state;
        new.check()?;
        match held {
            None => {
                if !new.members.contains(me) {
                    return Err(GroupError::NotInvited);
                }
                if !new.admins.contains(&self.signer) {
                    return Err(GroupError::NotAdmin(self.signer.clone()));
                }
                Ok(())
            }
            Some(old) => {
                if new.id != old.id {
                    return Err(GroupError::Invalid("group id changed"));
                }
                if new.version <= old.version {
                    return Err(GroupError::Stale { got: new.version, have: old.version });
                }
                if old.admins.contains(&self.signer) {
                    return Ok(());
                }
                // Anyone may leave: the only change allowed to a non-admin is removing itself.
                let mut without = old.members.clone();
                let left = without.remove(&self.signer);
                let mut admins = old.admins.clone();
                admins.remove(&self.signer);
                if left && new.members == without && new.admins == admins && new.name == old.name {
                    return Ok(());
                }
                Err(GroupError::NotAdmin(self.signer.clone()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Number {
        Number::new(s).expect("number")
    }

    fn key() -> SigningKey {
        SigningKey::generate(&mut rand::rngs::OsRng)
    }

    fn family(version: u64, members: &[&str], admins: &[&str]) -> GroupState {
        GroupState {
            id: GroupId([7; 16]),
            name: "Family".into(),
            members: members.iter().map(|m| n(m)).collect(),
            admins: admins.iter().map(|m| n(m)).collect(),
            version,
        }
    }

    fn pk(k: &SigningKey) -> PublicKey {
        PublicKey(k.verifying_key().to_bytes())
    }

    #[test]
    fn given_invitation_from_admin_then_accepted_by_a_member() {
        let admin = key();
        let s = family(1, &["123", "456"], &["123"]).sign(n("123"), &admin);
        assert_eq!(s.accept(None, &n("123"), &pk(&admin), &n("456")), Ok(()));
        assert_eq!(s.accept(None, &n("123"), &pk(&admin), &n("789")), Err(GroupError::NotInvited));
    }

    #[test]
    fn given_change_signed_by_non_admin_then_refused() {
        let (admin, member) = (key(), key());
        let held = family(1, &["123", "456", "789"], &["123"]);
        let forged = family(2, &["123", "456", "789", "999"], &["123"]).sign(n("456"), &member);
        assert_eq!(
            forged.accept(Some(&held), &n("456"), &pk(&member), &n("789")),
            Err(GroupError::NotAdmin(n("456")))
        );
        let fine = family(2, &["123", "456", "789", "999"], &["123"]).sign(n("123"), &admin);
        assert_eq!(fine.accept(Some(&held), &n("123"), &pk(&admin), &n("789")), Ok(()));
    }

    #[test]
    fn given_tampered_or_relayed_change_then_refused() {
        let (admin, other) = (key(), key());
        let held = family(1, &["123", "456"], &["123"]);
        let mut s = family(2, &["123", "456", "789"], &["123"]).sign(n("123"), &admin);
        assert!(matches!(
            s.accept(Some(&held), &n("123"), &pk(&other), &n("456")),
            Err(GroupError::NotFromSigner { .. })
        ));
        s.state.members.insert(n("666"));
        assert_eq!(s.accept(Some(&held), &n("123"), &pk(&admin), &n("456")), Err(GroupError::BadSignature));
    }

    #[test]
    fn given_member_leaving_then_accepted_but_not_if_it_changes_anything_else() {
        let leaver = key();
        let held = family(3, &["123", "456", "789"], &["123"]);
        let leave = family(4, &["123", "789"], &["123"]).sign(n("456"), &leaver);
        assert_eq!(leave.accept(Some(&held), &n("456"), &pk(&leaver), &n("789")), Ok(()));
        let sneaky = family(4, &["789"], &[]).sign(n("456"), &leaver);
        assert!(sneaky.accept(Some(&held), &n("456"), &pk(&leaver), &n("789")).is_err());
    }

    #[test]
    fn given_old_version_then_refused_as_stale() {
        let admin = key();
        let held = family(5, &["123", "456"], &["123"]);
        let old = family(5, &["123", "456", "789"], &["123"]).sign(n("123"), &admin);
        assert_eq!(
            old.accept(Some(&held), &n("123"), &pk(&admin), &n("456")),
            Err(GroupError::Stale { got: 5, have: 5 })
        );
    }
}
