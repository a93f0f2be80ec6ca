//! 国密 (Chinese national cryptography) primitives that department descriptions use as
//! declarative encoding steps on their payloads: SM4 in CBC and ECB modes with PKCS#7 padding,
//! the SM3 hash, HMAC-SM3, SM2 signatures, and the hex and Base64 text forms that carry keys,
//! cipher text and signatures in configuration and on the wire. Nothing here is a hand-written
//! cipher: SM4 is the RustCrypto `sm4` crate driven by its `cbc` and `ecb` modes, SM3 is `sm3`,
//! HMAC is `hmac`, SM2 is `sm2`; this module owns only their wiring, the key formats and the
//! error messages (which never quote key material).
//!
//! Formats:
//! - SM4 keys and IVs ([`key16`]) are 32 hex digits or exactly 16 bytes of text.
//! - [`encode`] writes lowercase hex or standard Base64 with `=` padding; [`decode`] takes either
//!   case of hex and Base64 with or without padding, and ignores whitespace anywhere in the text
//!   (line-wrapped Base64 as some Java encoders write it).
//! - SM2 ([`sm2_sign`], [`sm2_verify`]) follows GB/T 32918.2 (GM/T 0003.2) on the recommended
//!   curve of GB/T 32918.5: the message is hashed as SM3(Z_A || M), Z_A from the signer's user id,
//!   `1234567812345678` unless one is given (the default of GM/T 0009). A private key is 64 hex
//!   digits; a public key is the hex of `04||X||Y`, of `X||Y` (the `04` left off, as many
//!   department systems write it), or compressed `02/03||X`. A signature is the raw 64 bytes
//!   `r||s` (not DER), to be put in text with [`encode`]. Signing derives the nonce k
//!   deterministically from the key and the message (RFC 6979 with SM3, as the `sm2` crate does),
//!   so it needs no random source; a verifier cannot tell it from a random k.
//!
//! The `sm2` crate is 0.13, not the newer 0.14: 0.13 uses the `elliptic-curve` 0.13, `sm3` 0.4
//! and `signature` 2 already in the lock file, where 0.14 would bring a second copy of each.
//!
//! The tests check the known answers of GB/T 32907-2016 annex A (SM4: one block, and the block
//! encrypted 1,000,000 times), GB/T 32905-2016 annex A (SM3: "abc" and "abcd"×16), the SM2
//! signature example on the recommended curve (user id `1234567812345678`, "message digest")
//! that implementations' self-tests quote from GM/T 0003.5 (GB/T 32918.5) annex A, the `sm2`
//! crate's own verification vector (made with OpenSSL, with a user id of its own), CBC and ECB
//! against the raw block cipher, and HMAC-SM3 against RFC 2104 built by hand over [`sm3`].

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use cbc::cipher::block_padding::Pkcs7;
use cbc::cipher::{BlockDecryptMut, BlockEncryptMut, KeyInit, KeyIvInit};
use hmac::{Hmac, Mac};
use sm2::dsa::signature::{Signer, Verifier};
use sm3::Digest;
use sm4::Sm4;

/// The SM4 mode a department's payload uses (`sm4-cbc` or `sm4-ecb` in its file); both pad with
/// PKCS#7.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Cipher {
    Sm4Cbc,
    Sm4Ecb,
}

/// How bytes are written as text (`hex` or `base64` in a department's file).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    #[default]
    Hex,
    Base64,
}

/// What went wrong, said so that whoever wrote the department's file can fix it. No message
/// quotes a key, an IV or a character of one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    #[error("SM4 key or IV must be 16 bytes (32 hex digits, or 16 bytes of text), got {got}")]
    KeyLength { got: String },
    #[error("SM4 key or IV of 32 characters must be hex: character {position} is not a hex digit")]
    KeyHex { position: usize },
    #[error("SM4-CBC needs a 16-byte IV (32 hex digits), and none was given")]
    MissingIv,
    #[error(
        "SM4 cipher text must be a whole number of 16-byte blocks, at least one; got {got} bytes"
    )]
    CipherTextLength { got: usize },
    #[error("bad PKCS#7 padding (wrong key or IV?)")]
    Padding,
    #[error("not valid hex: character {position} is not a hex digit")]
    HexDigit { position: usize },
    #[error("not valid hex: an odd number of digits ({digits})")]
    HexOdd { digits: usize },
    #[error("not valid Base64: {reason}")]
    Base64 { reason: String },
    #[error("SM2 private key {reason}")]
    Sm2PrivateKey { reason: String },
    #[error("SM2 public key {reason}")]
    Sm2PublicKey { reason: String },
    #[error("SM2 user id must be shorter than 8192 bytes, got {got}")]
    Sm2UserId { got: usize },
    #[error("SM2 signature must be 64 bytes (r||s), got {got} bytes")]
    Sm2SignatureLength { got: usize },
    #[error("SM2 signing failed")]
    Sm2Sign,
}

/// A 16-byte key or IV as written in configuration: 32 hex digits, or exactly 16 bytes of text.
/// Whitespace around hex digits is ignored; text is taken as it is (16 characters that happen to
/// be hex digits are text).
pub fn key16(text: &str) -> Result<[u8; 16], CryptoError> {
    let trimmed = text.trim();
    let all_hex = !trimmed.is_empty() && trimmed.bytes().all(|b| b.is_ascii_hexdigit());
    if trimmed.len() == 32 {
        let bytes = decode(trimmed, Encoding::Hex).map_err(|e| match e {
            CryptoError::HexDigit { position } => CryptoError::KeyHex { position },
            other => other,
        })?;
        return <[u8; 16]>::try_from(bytes.as_slice()).map_err(|_| CryptoError::KeyLength {
            got: format!("{} bytes", bytes.len()),
        });
    }
    if let Ok(key) = <[u8; 16]>::try_from(text.as_bytes()) {
        return Ok(key);
    }
    let got = if all_hex && trimmed.len().is_multiple_of(2) {
        format!("{} hex digits ({} bytes)", trimmed.len(), trimmed.len() / 2)
    } else {
        format!("{} bytes of text", text.len())
    };
    Err(CryptoError::KeyLength { got })
}

/// Encrypts `plain` with SM4 in the given mode, padded with PKCS#7 (so the cipher text is always
/// 1 to 16 bytes longer than `plain`, a whole number of blocks). CBC needs `iv`; ECB ignores it.
pub fn sm4_encrypt(
    cipher: Cipher,
    key: &[u8; 16],
    iv: Option<&[u8; 16]>,
    plain: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    Ok(match cipher {
        Cipher::Sm4Cbc => {
            let iv = iv.ok_or(CryptoError::MissingIv)?;
            cbc::Encryptor::<Sm4>::new(key.into(), iv.into()).encrypt_padded_vec_mut::<Pkcs7>(plain)
        }
        Cipher::Sm4Ecb => {
            ecb::Encryptor::<Sm4>::new(key.into()).encrypt_padded_vec_mut::<Pkcs7>(plain)
        }
    })
}

/// Decrypts what [`sm4_encrypt`] made and takes the PKCS#7 padding off. A wrong key or IV shows
/// as [`CryptoError::Padding`] most of the time, and otherwise as different plain text: padding
/// is no integrity check.
pub fn sm4_decrypt(
    cipher: Cipher,
    key: &[u8; 16],
    iv: Option<&[u8; 16]>,
    cipher_text: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    if cipher_text.is_empty() || !cipher_text.len().is_multiple_of(16) {
        return Err(CryptoError::CipherTextLength {
            got: cipher_text.len(),
        });
    }
    match cipher {
        Cipher::Sm4Cbc => {
            let iv = iv.ok_or(CryptoError::MissingIv)?;
            cbc::Decryptor::<Sm4>::new(key.into(), iv.into())
                .decrypt_padded_vec_mut::<Pkcs7>(cipher_text)
        }
        Cipher::Sm4Ecb => {
            ecb::Decryptor::<Sm4>::new(key.into()).decrypt_padded_vec_mut::<Pkcs7>(cipher_text)
        }
    }
    .map_err(|_| CryptoError::Padding)
}

/// Bytes as text: lowercase hex, or standard Base64 with `=` padding.
pub fn encode(bytes: &[u8], encoding: Encoding) -> String {
    match encoding {
        Encoding::Hex => {
            const DIGITS: &[u8; 16] = b"0123456789abcdef";
            let mut out = String::with_capacity(bytes.len() * 2);
            for b in bytes {
                out.push(char::from(DIGITS[usize::from(b >> 4)]));
                out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
            }
            out
        }
        Encoding::Base64 => base64::engine::general_purpose::STANDARD.encode(bytes),
    }
}

/// Text as bytes: hex in either case, or standard Base64 with or without `=` padding.
/// Whitespace anywhere is ignored. Positions in errors count characters from 1.
pub fn decode(text: &str, encoding: Encoding) -> Result<Vec<u8>, CryptoError> {
    match encoding {
        Encoding::Hex => {
            let mut nibbles = Vec::with_capacity(text.len());
            for (i, c) in text.chars().enumerate() {
                if c.is_whitespace() {
                    continue;
                }
                let digit = c
                    .to_digit(16)
                    .ok_or(CryptoError::HexDigit { position: i + 1 })?;
                nibbles.push(digit as u8);
            }
            if !nibbles.len().is_multiple_of(2) {
                return Err(CryptoError::HexOdd {
                    digits: nibbles.len(),
                });
            }
            Ok(nibbles
                .chunks_exact(2)
                .map(|p| (p[0] << 4) | p[1])
                .collect())
        }
        Encoding::Base64 => {
            const LENIENT: GeneralPurpose = GeneralPurpose::new(
                &base64::alphabet::STANDARD,
                GeneralPurposeConfig::new()
                    .with_decode_padding_mode(DecodePaddingMode::Indifferent),
            );
            let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
            LENIENT.decode(compact).map_err(|e| {
                use base64::DecodeError as E;
                // The offending byte is left out of the message: the text may be a key.
                let reason = match e {
                    E::InvalidByte(at, _) => format!(
                        "character {} (not counting whitespace) is not in the standard alphabet",
                        at + 1
                    ),
                    E::InvalidLength(n) => {
                        format!("{n} symbols (not counting whitespace) are not a whole number of bytes")
                    }
                    E::InvalidLastSymbol(at, _) => format!(
                        "the last symbol (character {}, not counting whitespace) has bits set past the end of the data",
                        at + 1
                    ),
                    E::InvalidPadding => "misplaced `=` padding".to_owned(),
                };
                CryptoError::Base64 { reason }
            })
        }
    }
}

/// The SM3 hash (GB/T 32905).
pub fn sm3(data: &[u8]) -> [u8; 32] {
    sm3::Sm3::digest(data).into()
}

/// HMAC (RFC 2104) over SM3; a key of any length.
pub fn hmac_sm3(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac =
        <Hmac<sm3::Sm3> as Mac>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// The user id of GM/T 0009 that signers use unless they agree on another.
const DEFAULT_USER_ID: &str = "1234567812345678";

fn user_id(given: Option<&str>) -> Result<&str, CryptoError> {
    let id = given.unwrap_or(DEFAULT_USER_ID);
    // Z_A starts with the id's length in bits as 16 bits.
    if id.len() >= 8192 {
        return Err(CryptoError::Sm2UserId { got: id.len() });
    }
    Ok(id)
}

/// Why a key's hex could not be read, without quoting it.
fn hex_reason(e: &CryptoError) -> String {
    match e {
        CryptoError::HexDigit { position } => {
            format!("is not hex: character {position} is not a hex digit")
        }
        CryptoError::HexOdd { digits } => format!("is not hex: an odd number of digits ({digits})"),
        other => other.to_string(),
    }
}

/// SM2 signature (GB/T 32918.2) of `data` by the private key (64 hex digits), with the default
/// user id `1234567812345678` unless one is given: the raw 64 bytes `r||s`, to be written as text
/// with [`encode`].
pub fn sm2_sign(
    private_key_hex: &str,
    user_id: Option<&str>,
    data: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let id = self::user_id(user_id)?;
    let secret =
        decode(private_key_hex, Encoding::Hex).map_err(|e| CryptoError::Sm2PrivateKey {
            reason: hex_reason(&e),
        })?;
    if secret.len() != 32 {
        return Err(CryptoError::Sm2PrivateKey {
            reason: format!(
                "must be 32 bytes (64 hex digits), got {} bytes",
                secret.len()
            ),
        });
    }
    let key =
        sm2::dsa::SigningKey::from_slice(id, &secret).map_err(|_| CryptoError::Sm2PrivateKey {
            reason: "must be a number from 1 to n-1, n the order of the SM2 curve".to_owned(),
        })?;
    let signature: sm2::dsa::Signature = key.try_sign(data).map_err(|_| CryptoError::Sm2Sign)?;
    Ok(signature.to_bytes().to_vec())
}

/// Whether `signature` (the raw 64 bytes `r||s`) is the SM2 signature of `data` by the holder of
/// the public key, with the default user id `1234567812345678` unless one is given. A signature
/// of another length is an error; 64 bytes that cannot be a signature (r or s zero or not below
/// the curve's order) verify false.
pub fn sm2_verify(
    public_key_hex: &str,
    user_id: Option<&str>,
    data: &[u8],
    signature: &[u8],
) -> Result<bool, CryptoError> {
    let id = self::user_id(user_id)?;
    let mut point =
        decode(public_key_hex, Encoding::Hex).map_err(|e| CryptoError::Sm2PublicKey {
            reason: hex_reason(&e),
        })?;
    let shape = "must be 04||X||Y (65 bytes), X||Y (64 bytes) or 02/03||X (33 bytes)";
    match point.len() {
        64 => point.insert(0, 0x04),
        65 | 33 => {}
        n => {
            return Err(CryptoError::Sm2PublicKey {
                reason: format!("{shape}, got {n} bytes"),
            });
        }
    }
    let key = sm2::dsa::VerifyingKey::from_sec1_bytes(id, &point).map_err(|_| {
        CryptoError::Sm2PublicKey {
            reason: format!("is not a point on the SM2 curve ({shape})"),
        }
    })?;
    if signature.len() != sm2::dsa::Signature::BYTE_SIZE {
        return Err(CryptoError::Sm2SignatureLength {
            got: signature.len(),
        });
    }
    let Ok(signature) = sm2::dsa::Signature::from_slice(signature) else {
        return Ok(false);
    };
    Ok(key.verify(data, &signature).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sm4::cipher::{BlockDecrypt, BlockEncrypt};

    fn hex(text: &str) -> Vec<u8> {
        decode(text, Encoding::Hex).unwrap()
    }

    fn hex16(text: &str) -> [u8; 16] {
        hex(text).try_into().unwrap()
    }

    /// The raw SM4 block cipher, one block.
    fn block_encrypt(key: &[u8; 16], block: [u8; 16]) -> [u8; 16] {
        let mut b = block.into();
        Sm4::new(key.into()).encrypt_block(&mut b);
        b.into()
    }

    fn xor(a: &[u8], b: &[u8]) -> [u8; 16] {
        std::array::from_fn(|i| a[i] ^ b[i])
    }

    const GB_KEY: &str = "0123456789abcdeffedcba9876543210";

    #[test]
    fn sm4_one_block_gives_the_gbt_32907_known_answer() {
        let key = hex16(GB_KEY);
        let c = block_encrypt(&key, key);
        assert_eq!(
            encode(&c, Encoding::Hex),
            "681edf34d206965e86b3e94f536e4246"
        );
        let mut back = c.into();
        Sm4::new((&key).into()).decrypt_block(&mut back);
        assert_eq!(<[u8; 16]>::from(back), key);
        // Through the ECB wiring: the block, then a whole block of padding.
        let ecb = sm4_encrypt(Cipher::Sm4Ecb, &key, None, &key).unwrap();
        assert_eq!(ecb.len(), 32);
        assert_eq!(ecb[..16], c);
        assert_eq!(ecb[16..], block_encrypt(&key, [16; 16]));
    }

    /// GB/T 32907-2016 A.2: the block encrypted 1,000,000 times with the same key, on the raw
    /// block cipher (one key schedule): about 2.5 s in a debug build, where the dependencies build
    /// at opt-level 1.
    #[test]
    fn sm4_block_encrypted_a_million_times_gives_the_gbt_32907_known_answer() {
        let key = hex16(GB_KEY);
        let cipher = Sm4::new((&key).into());
        let mut b = key.into();
        for _ in 0..1_000_000 {
            cipher.encrypt_block(&mut b);
        }
        assert_eq!(
            encode(&b, Encoding::Hex),
            "595298c7c6fd271f0402f804c33d3f66"
        );
    }

    const SAMPLES: [&[u8]; 4] = [
        b"",
        b"x",
        b"0123456789abcdef",
        "一窗受理、集成服务".as_bytes(),
    ];

    #[test]
    fn sm4_cbc_and_ecb_round_trip_with_pkcs7_lengths() {
        let key = hex16(GB_KEY);
        let iv = hex16("000102030405060708090a0b0c0d0e0f");
        for cipher in [Cipher::Sm4Cbc, Cipher::Sm4Ecb] {
            for plain in SAMPLES {
                let c = sm4_encrypt(cipher, &key, Some(&iv), plain).unwrap();
                assert_eq!(c.len(), (plain.len() / 16 + 1) * 16, "{cipher:?} {plain:?}");
                assert_eq!(sm4_decrypt(cipher, &key, Some(&iv), &c).unwrap(), plain);
            }
        }
        // The lengths the names promise.
        assert_eq!(
            sm4_encrypt(Cipher::Sm4Cbc, &key, Some(&iv), b"")
                .unwrap()
                .len(),
            16
        );
        assert_eq!(
            sm4_encrypt(Cipher::Sm4Ecb, &key, None, b"x").unwrap().len(),
            16
        );
        assert_eq!(
            sm4_encrypt(Cipher::Sm4Ecb, &key, None, &[7; 16])
                .unwrap()
                .len(),
            32
        );
        let chinese = "一窗受理、集成服务";
        let c = sm4_encrypt(Cipher::Sm4Cbc, &key, Some(&iv), chinese.as_bytes()).unwrap();
        let back = sm4_decrypt(Cipher::Sm4Cbc, &key, Some(&iv), &c).unwrap();
        assert_eq!(String::from_utf8(back).unwrap(), chinese);
    }

    #[test]
    fn sm4_cbc_matches_the_chain_built_from_the_raw_block_cipher() {
        let key = hex16("fedcba98765432100123456789abcdef");
        let iv = hex16("00112233445566778899aabbccddeeff");
        let plain = b"0123456789abcdef0123";
        // PKCS#7: 20 bytes take 12 bytes of 0x0c.
        let mut padded = plain.to_vec();
        padded.extend([12u8; 12]);
        let c1 = block_encrypt(&key, xor(&padded[..16], &iv));
        let c2 = block_encrypt(&key, xor(&padded[16..], &c1));
        let expected = [c1, c2].concat();
        assert_eq!(
            sm4_encrypt(Cipher::Sm4Cbc, &key, Some(&iv), plain).unwrap(),
            expected
        );
        assert_eq!(
            sm4_decrypt(Cipher::Sm4Cbc, &key, Some(&iv), &expected).unwrap(),
            plain
        );
        // ECB of the same text is each block alone, and ignores an IV.
        let ecb = [
            block_encrypt(&key, padded[..16].try_into().unwrap()),
            block_encrypt(&key, padded[16..].try_into().unwrap()),
        ]
        .concat();
        assert_eq!(
            sm4_encrypt(Cipher::Sm4Ecb, &key, Some(&iv), plain).unwrap(),
            ecb
        );
        assert_eq!(sm4_encrypt(Cipher::Sm4Ecb, &key, None, plain).unwrap(), ecb);
        assert_ne!(ecb, expected);
    }

    #[test]
    fn sm4_wrong_key_gives_a_padding_error_or_other_text_never_a_panic() {
        let key = hex16(GB_KEY);
        let iv = [9u8; 16];
        let plain = "申请人：张三；事项：营业执照".as_bytes();
        let mut padding_errors = 0;
        for cipher in [Cipher::Sm4Cbc, Cipher::Sm4Ecb] {
            let c = sm4_encrypt(cipher, &key, Some(&iv), plain).unwrap();
            for i in 0..64u8 {
                let mut wrong = key;
                wrong[usize::from(i % 16)] ^= i + 1;
                match sm4_decrypt(cipher, &wrong, Some(&iv), &c) {
                    Err(e) => {
                        assert_eq!(e, CryptoError::Padding);
                        padding_errors += 1;
                    }
                    Ok(text) => assert_ne!(text, plain),
                }
            }
        }
        assert!(
            padding_errors > 100,
            "{padding_errors} of 128 wrong keys were caught"
        );
        assert_eq!(
            CryptoError::Padding.to_string(),
            "bad PKCS#7 padding (wrong key or IV?)"
        );
    }

    #[test]
    fn sm4_cbc_without_iv_is_an_error() {
        let key = hex16(GB_KEY);
        assert_eq!(
            sm4_encrypt(Cipher::Sm4Cbc, &key, None, b"abc"),
            Err(CryptoError::MissingIv)
        );
        assert_eq!(
            sm4_decrypt(Cipher::Sm4Cbc, &key, None, &[0; 16]),
            Err(CryptoError::MissingIv)
        );
    }

    #[test]
    fn sm4_decrypt_of_a_partial_block_is_a_length_error() {
        let key = hex16(GB_KEY);
        for n in [0, 1, 15, 17, 31] {
            assert_eq!(
                sm4_decrypt(Cipher::Sm4Ecb, &key, None, &vec![0; n]),
                Err(CryptoError::CipherTextLength { got: n })
            );
        }
    }

    #[test]
    fn key16_reads_hex_or_text_and_says_what_is_wrong_without_the_key() {
        assert_eq!(key16(GB_KEY).unwrap(), hex16(GB_KEY));
        assert_eq!(key16(&GB_KEY.to_uppercase()).unwrap(), hex16(GB_KEY));
        assert_eq!(key16(&format!(" {GB_KEY}\n")).unwrap(), hex16(GB_KEY));
        assert_eq!(&key16("yichuang-secret!").unwrap(), b"yichuang-secret!");
        // 16 hex digits are 16 bytes of text, not 8 bytes.
        assert_eq!(&key16("0123456789abcdef").unwrap(), b"0123456789abcdef");
        // 16 bytes of UTF-8 text.
        assert_eq!(key16("一窗受理、a").unwrap().len(), 16);

        let e = key16("0123456789abcdef0123").unwrap_err();
        assert_eq!(
            e.to_string(),
            "SM4 key or IV must be 16 bytes (32 hex digits, or 16 bytes of text), got 20 hex digits (10 bytes)"
        );
        let e = key16("tenletters").unwrap_err();
        assert_eq!(
            e.to_string(),
            "SM4 key or IV must be 16 bytes (32 hex digits, or 16 bytes of text), got 10 bytes of text"
        );
        assert!(!e.to_string().contains("tenletters"));
        let e = key16("0123456789abcdeffedcba987654321z").unwrap_err();
        assert_eq!(e, CryptoError::KeyHex { position: 32 });
        assert!(!e.to_string().contains('z'));
        assert!(key16("").is_err());
    }

    #[test]
    fn sm3_gives_the_gbt_32905_known_answers() {
        assert_eq!(
            encode(&sm3(b"abc"), Encoding::Hex),
            "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0"
        );
        assert_eq!(
            encode(&sm3("abcd".repeat(16).as_bytes()), Encoding::Hex),
            "debe9ff92275b8a138604889c18e5a4d6fdb70e5387e5765293dcba39c0c5732"
        );
    }

    /// RFC 2104 by hand over `sm3()`: H((K ^ opad) || H((K ^ ipad) || text)), K hashed first if
    /// longer than the 64-byte block, then zero-padded to it.
    fn hmac_by_hand(key: &[u8], data: &[u8]) -> [u8; 32] {
        let mut k = if key.len() > 64 {
            sm3(key).to_vec()
        } else {
            key.to_vec()
        };
        k.resize(64, 0);
        let inner: Vec<u8> = k
            .iter()
            .map(|b| b ^ 0x36)
            .chain(data.iter().copied())
            .collect();
        let outer: Vec<u8> = k.iter().map(|b| b ^ 0x5c).chain(sm3(&inner)).collect();
        sm3(&outer)
    }

    #[test]
    fn hmac_sm3_equals_rfc_2104_built_by_hand_for_short_and_long_keys() {
        let data = "事项编码=110000;申请人=张三".as_bytes();
        for key in [b"key".to_vec(), vec![0xa5; 64], vec![0x0b; 100], Vec::new()] {
            assert_eq!(
                hmac_sm3(&key, data),
                hmac_by_hand(&key, data),
                "key of {}",
                key.len()
            );
        }
        assert_ne!(hmac_sm3(b"key", data), hmac_sm3(b"kez", data));
    }

    #[test]
    fn hex_and_base64_round_trip() {
        let all: Vec<u8> = (0..=255).collect();
        for n in [0, 1, 2, 3, 4, 5, 256] {
            let bytes = &all[..n];
            for encoding in [Encoding::Hex, Encoding::Base64] {
                assert_eq!(decode(&encode(bytes, encoding), encoding).unwrap(), bytes);
            }
        }
        assert_eq!(encode(&[0xab, 0x01, 0xff], Encoding::Hex), "ab01ff");
        assert_eq!(decode("AB01Ff", Encoding::Hex).unwrap(), [0xab, 0x01, 0xff]);
        assert_eq!(
            decode(" ab 01\nff\t", Encoding::Hex).unwrap(),
            [0xab, 0x01, 0xff]
        );
        assert_eq!(encode(b"ab", Encoding::Base64), "YWI=");
        assert_eq!(encode("国密".as_bytes(), Encoding::Base64), "5Zu95a+G");
        assert_eq!(decode("YWI=", Encoding::Base64).unwrap(), b"ab");
        assert_eq!(decode("YWI", Encoding::Base64).unwrap(), b"ab");
        assert_eq!(
            decode(" 5Zu9\r\n5a+G\n", Encoding::Base64).unwrap(),
            "国密".as_bytes()
        );
        assert_eq!(Encoding::default(), Encoding::Hex);
    }

    #[test]
    fn hex_and_base64_errors_are_clear_and_do_not_quote_the_text() {
        let e = decode("abzq", Encoding::Hex).unwrap_err();
        assert_eq!(
            e.to_string(),
            "not valid hex: character 3 is not a hex digit"
        );
        assert_eq!(
            decode("abc", Encoding::Hex).unwrap_err().to_string(),
            "not valid hex: an odd number of digits (3)"
        );
        assert_eq!(
            decode("中文", Encoding::Hex).unwrap_err(),
            CryptoError::HexDigit { position: 1 }
        );
        let e = decode("YW#=", Encoding::Base64).unwrap_err();
        assert_eq!(
            e.to_string(),
            "not valid Base64: character 3 (not counting whitespace) is not in the standard alphabet"
        );
        assert!(!e.to_string().contains('#'));
        assert_eq!(
            decode("YWJjZ", Encoding::Base64).unwrap_err().to_string(),
            "not valid Base64: 5 symbols (not counting whitespace) are not a whole number of bytes"
        );
        assert!(matches!(
            decode("YW=I", Encoding::Base64),
            Err(CryptoError::Base64 { .. })
        ));
        // URL-safe Base64 is another alphabet.
        assert!(decode("-_8=", Encoding::Base64).is_err());
    }

    #[test]
    fn department_files_name_ciphers_and_encodings_in_kebab_and_lower_case() {
        #[derive(serde::Deserialize)]
        struct Step {
            cipher: Cipher,
            #[serde(default)]
            encoding: Encoding,
        }
        let s: Step =
            serde_json::from_str(r#"{"cipher": "sm4-cbc", "encoding": "base64"}"#).unwrap();
        assert_eq!((s.cipher, s.encoding), (Cipher::Sm4Cbc, Encoding::Base64));
        let s: Step = serde_json::from_str(r#"{"cipher": "sm4-ecb"}"#).unwrap();
        assert_eq!((s.cipher, s.encoding), (Cipher::Sm4Ecb, Encoding::Hex));
        assert!(serde_json::from_str::<Step>(r#"{"cipher": "sm4"}"#).is_err());
    }

    // The SM2 signature example on the recommended curve, with the default user id
    // 1234567812345678 and the message "message digest", as implementations' self-tests quote it
    // from GM/T 0003.5 (GB/T 32918.5) annex A. Its nonce k was random, so only verifying it is a
    // known answer; the crate's own signatures use another k.
    const GM_PRIVATE: &str = "3945208f7b2144b13f36e38ac6d39f95889393692860b51a42fb81ef4df7c5b8";
    const GM_X: &str = "09f9df311e5421a150dd7d161e4bc5c672179fad1833fc076bb08ff356f35020";
    const GM_Y: &str = "ccea490ce26775a52dc6ea718cc1aa600aed05fbf35e084a6632f6072da9ad13";
    const GM_R: &str = "f5a03b0648d2c4630eeac513e1bb81a15944da3827d5b74143ac7eaceee720b3";
    const GM_S: &str = "b1b6aa29df212fd8763182bc0d421ca1bb9038fd1f7f42d4840b69c485bbc1aa";
    const GM_MESSAGE: &[u8] = b"message digest";

    fn gm_public() -> String {
        format!("04{GM_X}{GM_Y}")
    }

    #[test]
    fn sm2_verifies_the_gmt_0003_5_example_signature_with_the_default_user_id() {
        let signature = hex(&format!("{GM_R}{GM_S}"));
        for public in [gm_public(), format!("{GM_X}{GM_Y}"), format!("03{GM_X}")] {
            assert_eq!(
                sm2_verify(&public, None, GM_MESSAGE, &signature),
                Ok(true),
                "{public}"
            );
        }
        assert_eq!(
            sm2_verify(
                &gm_public(),
                Some("1234567812345678"),
                GM_MESSAGE,
                &signature
            ),
            Ok(true)
        );
        // Z_A covers the user id.
        assert_eq!(
            sm2_verify(
                &gm_public(),
                Some("ALICE123@YAHOO.COM"),
                GM_MESSAGE,
                &signature
            ),
            Ok(false)
        );
    }

    #[test]
    fn sm2_verifies_the_sm2_crates_openssl_vector_with_its_user_id() {
        let public = "0408d77ae04c01cc4c1104360dd8af6b6f7df334283d7c1a6afd5652407b87bee5\
                      014e2a57c36c150d16324dc664e31e6432359609c4e79847a5b161c8c7364c8a";
        let signature = hex(
            "d1dcccedd9fb785e0f67c16b7c52901625c0b69de9bca2144acc7be713cad2fc\
                             f7d1eae6e3a157b36c65f672f738ca8b46298bf149a6510072c431b49cd88b1c",
        );
        let id = Some("example@rustcrypto.org");
        assert_eq!(sm2_verify(public, id, b"testing", &signature), Ok(true));
        assert_eq!(sm2_verify(public, None, b"testing", &signature), Ok(false));
    }

    #[test]
    fn sm2_sign_then_verify_is_true() {
        for (id, data) in [
            (None, GM_MESSAGE),
            (Some("dept-110000@yichuang"), "营业执照申请".as_bytes()),
            (None, b"".as_slice()),
        ] {
            let signature = sm2_sign(GM_PRIVATE, id, data).unwrap();
            assert_eq!(signature.len(), 64);
            // The private key's public key is the published one.
            assert_eq!(sm2_verify(&gm_public(), id, data, &signature), Ok(true));
            let text = encode(&signature, Encoding::Base64);
            let back = decode(&text, Encoding::Base64).unwrap();
            assert_eq!(sm2_verify(&gm_public(), id, data, &back), Ok(true));
        }
        // Upper-case hex and whitespace around the key are fine.
        let signature = sm2_sign(&format!(" {}\n", GM_PRIVATE.to_uppercase()), None, b"x").unwrap();
        assert_eq!(sm2_verify(&gm_public(), None, b"x", &signature), Ok(true));
    }

    #[test]
    fn sm2_changed_message_or_signature_verifies_false() {
        let signature = sm2_sign(GM_PRIVATE, None, GM_MESSAGE).unwrap();
        assert_eq!(
            sm2_verify(&gm_public(), None, b"message digesT", &signature),
            Ok(false)
        );
        for i in [0, 31, 32, 63] {
            let mut changed = signature.clone();
            changed[i] ^= 0x01;
            assert_eq!(
                sm2_verify(&gm_public(), None, GM_MESSAGE, &changed),
                Ok(false),
                "byte {i}"
            );
        }
        // r = 0, or r and s past the curve's order: not a signature, so false.
        let mut zero_r = signature.clone();
        zero_r[..32].fill(0);
        assert_eq!(
            sm2_verify(&gm_public(), None, GM_MESSAGE, &zero_r),
            Ok(false)
        );
        assert_eq!(
            sm2_verify(&gm_public(), None, GM_MESSAGE, &[0xff; 64]),
            Ok(false)
        );
        // Another key's public key.
        let other = sm2_sign(&"11".repeat(32), None, GM_MESSAGE).unwrap();
        assert_eq!(
            sm2_verify(&gm_public(), None, GM_MESSAGE, &other),
            Ok(false)
        );
    }

    #[test]
    fn sm2_bad_keys_and_signature_lengths_are_clear_errors() {
        let e = sm2_sign("12345", None, b"x").unwrap_err();
        assert_eq!(
            e.to_string(),
            "SM2 private key is not hex: an odd number of digits (5)"
        );
        let e = sm2_sign(&"ab".repeat(31), None, b"x").unwrap_err();
        assert_eq!(
            e.to_string(),
            "SM2 private key must be 32 bytes (64 hex digits), got 31 bytes"
        );
        let e = sm2_sign(&"0".repeat(64), None, b"x").unwrap_err();
        assert!(matches!(e, CryptoError::Sm2PrivateKey { .. }), "{e}");
        // n and above.
        assert!(sm2_sign(&"f".repeat(64), None, b"x").is_err());
        let e = sm2_sign(&format!("{}g", &GM_PRIVATE[..63]), None, b"x").unwrap_err();
        assert!(!e.to_string().contains(&GM_PRIVATE[..8]), "{e}");

        let signature = sm2_sign(GM_PRIVATE, None, b"x").unwrap();
        let e = sm2_verify(&GM_X[..40], None, b"x", &signature).unwrap_err();
        assert_eq!(
            e.to_string(),
            "SM2 public key must be 04||X||Y (65 bytes), X||Y (64 bytes) or 02/03||X (33 bytes), got 20 bytes"
        );
        // 33 bytes that are not 02/03||X.
        assert!(matches!(
            sm2_verify(&format!("04{GM_X}"), None, b"x", &signature),
            Err(CryptoError::Sm2PublicKey { .. })
        ));
        // A point that is not on the curve: Y changed.
        let off_curve = format!("04{GM_X}{}", GM_X);
        assert!(matches!(
            sm2_verify(&off_curve, None, b"x", &signature),
            Err(CryptoError::Sm2PublicKey { .. })
        ));
        assert!(sm2_verify("04zz", None, b"x", &signature).is_err());
        assert_eq!(
            sm2_verify(&gm_public(), None, b"x", &signature[..63]),
            Err(CryptoError::Sm2SignatureLength { got: 63 })
        );
        let long_id = "x".repeat(8192);
        assert_eq!(
            sm2_sign(GM_PRIVATE, Some(&long_id), b"x"),
            Err(CryptoError::Sm2UserId { got: 8192 })
        );
    }
}
