//! Build-time settings of the firmware binaries, checked while compiling: a bad value stops the
//! build with a message instead of reaching a device.
//!
//! | variable | read by | default | what |
//! |---|---|---|---|
//! | `RIVULET_DEVICE_NAME` | every binary, [`device_name!`](crate::device_name) | per binary (`nucleo`, `qemu`) | the client name and the middle segment of the device's event types |
//! | `RIVULET_GATEWAY` | the Nucleo, [`gateway_endpoint!`](crate::gateway_endpoint) | `192.168.1.10:7780` | the gateway's IPv4 address and port |
//! | `RIVULET_DEVICE_TOKEN` | binaries built with their `login` feature, [`device_token!`](crate::device_token) | none | the 64 hex digits `rivulet credential NAME` printed, for a gateway with logins |
//!
//! Cargo rebuilds a binary when one of them changes (`option_env!` is tracked).

/// Longest device name, in bytes: `device/<name>/telemetry/temperature` must fit an event type's
/// 64 packed bytes ([`rivulet_embassy::TYPE_BYTES`]).
pub const NAME_MAX: usize = 32;

/// Whether `name` can name a device: 1 to [`NAME_MAX`] ASCII letters, digits, `-`, `_` or `.`.
/// That keeps it one event-type segment, free of the pattern characters `?` and `*`, and
/// printable in JSON without escaping.
pub const fn is_valid_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() > NAME_MAX {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if !(c.is_ascii_alphanumeric() || c == b'-' || c == b'_' || c == b'.') {
            return false;
        }
        i += 1;
    }
    true
}

/// Parses `A.B.C.D:PORT` (a port from 1 to 65535) into the address's octets and the port.
pub const fn parse_ipv4_endpoint(text: &str) -> Option<([u8; 4], u16)> {
    let bytes = text.as_bytes();
    let mut octets = [0u8; 4];
    let mut part = 0; // the octet being read; 4 once the port begins
    let mut value: u32 = 0;
    let mut digits = 0;
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c.is_ascii_digit() {
            // Five digits at most anywhere, so `value` cannot overflow.
            digits += 1;
            if digits > 5 {
                return None;
            }
            value = value * 10 + (c - b'0') as u32;
        } else if (c == b'.' && part < 3) || (c == b':' && part == 3) {
            if digits == 0 || value > 255 {
                return None;
            }
            octets[part] = value as u8;
            part += 1;
            value = 0;
            digits = 0;
        } else {
            return None;
        }
        i += 1;
    }
    if part != 4 || digits == 0 || value == 0 || value > 65535 {
        return None;
    }
    Some((octets, value as u16))
}

/// A token's 64 hex digits as its 32 bytes, or `None` if they are not exactly that.
pub const fn parse_token(text: &str) -> Option<[u8; 32]> {
    let hex = text.as_bytes();
    if hex.len() != 64 {
        return None;
    }
    let mut token = [0u8; 32];
    let mut i = 0;
    while i < 64 {
        let digit = match hex[i] {
            c @ b'0'..=b'9' => c - b'0',
            c @ b'a'..=b'f' => c - b'a' + 10,
            c @ b'A'..=b'F' => c - b'A' + 10,
            _ => return None,
        };
        token[i / 2] = (token[i / 2] << 4) | digit;
        i += 1;
    }
    Some(token)
}

/// The login token, `Option<&'static [u8; 32]>`: `RIVULET_DEVICE_TOKEN` at build time (checked
/// while compiling), else `None`. It ends up in the firmware image: flash it only to your device.
#[macro_export]
macro_rules! device_token {
    () => {{
        const TOKEN: Option<[u8; 32]> = match option_env!("RIVULET_DEVICE_TOKEN") {
            Some(text) => match $crate::config::parse_token(text) {
                Some(token) => Some(token),
                None => panic!("RIVULET_DEVICE_TOKEN must be the 64 hex digits `rivulet credential` printed"),
            },
            None => None,
        };
        const TOKEN_REF: Option<&[u8; 32]> = TOKEN.as_ref();
        TOKEN_REF
    }};
}

/// The device name: `RIVULET_DEVICE_NAME` at build time, else `$default`; a `&'static str`
/// checked by [`is_valid_name`] while compiling.
#[macro_export]
macro_rules! device_name {
    ($default:literal) => {{
        const NAME: &str = match option_env!("RIVULET_DEVICE_NAME") {
            Some(name) => name,
            None => $default,
        };
        const _: () = assert!(
            $crate::config::is_valid_name(NAME),
            "RIVULET_DEVICE_NAME must be 1 to 32 of the characters A-Z a-z 0-9 - _ ."
        );
        NAME
    }};
}

/// The gateway's address and port, `([u8; 4], u16)`: `RIVULET_GATEWAY` (`A.B.C.D:PORT`) at build
/// time, else `$default`; checked while compiling.
#[macro_export]
macro_rules! gateway_endpoint {
    ($default:literal) => {{
        const ENDPOINT: ([u8; 4], u16) =
            match $crate::config::parse_ipv4_endpoint(match option_env!("RIVULET_GATEWAY") {
                Some(text) => text,
                None => $default,
            }) {
                Some(endpoint) => endpoint,
                None => panic!("RIVULET_GATEWAY must be an IPv4 address and a port, like 192.168.1.10:7780"),
            };
        ENDPOINT
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens() {
        let hex = "000102030405060708090a0b0c0d0e0f101112131415161718191A1B1C1D1E1F";
        let token = parse_token(hex).expect("a token");
        assert_eq!(token, core::array::from_fn(|i| i as u8));
        assert_eq!(parse_token(&hex[..62]), None);
        assert_eq!(parse_token(&hex.replace('0', "g")), None);
    }

    #[test]
    fn names() {
        assert!(is_valid_name("nucleo"));
        assert!(is_valid_name("qemu-an386_1.b"));
        assert!(is_valid_name(&"x".repeat(NAME_MAX)));
        for bad in ["", "a/b", "*", "?", "a b", "é", "\"", &"x".repeat(NAME_MAX + 1)] {
            assert!(!is_valid_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn endpoints() {
        assert_eq!(parse_ipv4_endpoint("192.168.1.10:7780"), Some(([192, 168, 1, 10], 7780)));
        assert_eq!(parse_ipv4_endpoint("0.0.0.0:65535"), Some(([0, 0, 0, 0], 65535)));
        for bad in [
            "",
            "192.168.1.10",
            "192.168.1:7780",
            "192.168.1.10.1:7780",
            "256.1.1.1:1",
            "1.1.1.1:0",
            "1.1.1.1:65536",
            "1.1.1.1:123456",
            "1..1.1:1",
            "1.1.1.1:",
            "host:7780",
            " 1.1.1.1:1",
        ] {
            assert_eq!(parse_ipv4_endpoint(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn macros_give_the_defaults() {
        // The test build does not set the variables (the crate's own tests never do).
        if option_env!("RIVULET_DEVICE_NAME").is_none() {
            assert_eq!(crate::device_name!("dev"), "dev");
        }
        if option_env!("RIVULET_GATEWAY").is_none() {
            assert_eq!(crate::gateway_endpoint!("10.0.0.1:80"), ([10, 0, 0, 1], 80));
        }
    }
}
