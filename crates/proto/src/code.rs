//! Codes on the wire: small enums a receiver acts on, sent as one varint, where a value from a newer
//! version must still decode (as `Unknown(n)`) instead of breaking the message that carries it.
//!
//! [`wire_code!`] defines such an enum with its numbers, and its serde forms: the number in postcard,
//! the name in text formats (the test vectors), where a number is accepted too.

/// Defines a wire code enum: `Name = number` per variant, plus `Unknown(u32)` for numbers this version
/// does not know. `code()` and `from_code()` convert; `from_code` never makes `Unknown` of a known number.
macro_rules! wire_code {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $code:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        $vis enum $name {
            $( $(#[$vmeta])* $variant, )+
            /// A code this version does not know (the number on the wire).
            Unknown(u32),
        }

        impl $name {
            /// The number on the wire.
            pub fn code(self) -> u32 {
                match self {
                    $( Self::$variant => $code, )+
                    Self::Unknown(n) => n,
                }
            }

            /// The code a number on the wire stands for.
            pub fn from_code(n: u32) -> Self {
                match n {
                    $( $code => Self::$variant, )+
                    n => Self::Unknown(n),
                }
            }

            fn name(self) -> Option<&'static str> {
                match self {
                    $( Self::$variant => Some(stringify!($variant)), )+
                    Self::Unknown(_) => None,
                }
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                match self.name() {
                    Some(name) if s.is_human_readable() => s.serialize_str(name),
                    _ => s.serialize_u32(self.code()),
                }
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                if !d.is_human_readable() {
                    return <u32 as serde::Deserialize>::deserialize(d).map(Self::from_code);
                }
                #[derive(serde::Deserialize)]
                #[serde(untagged)]
                enum Text {
                    Code(u32),
                    Name(String),
                }
                match <Text as serde::Deserialize>::deserialize(d)? {
                    Text::Code(n) => Ok(Self::from_code(n)),
                    $( Text::Name(name) if name == stringify!($variant) => Ok(Self::$variant), )+
                    Text::Name(name) => Err(serde::de::Error::custom(format!(
                        concat!("unknown ", stringify!($name), " {:?}"),
                        name
                    ))),
                }
            }
        }
    };
}

pub(crate) use wire_code;
