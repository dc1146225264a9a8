//! NTLM (\[MS-NLMP\]) as an HTTP client uses it: the NEGOTIATE message it
//! opens with, the server's CHALLENGE, and the AUTHENTICATE answer carrying an
//! NTLMv2 response. Pure: bytes in, bytes out. The caller brings the clock and
//! the random client challenge, and carries the messages over HTTP.
//!
//! What this client does: Unicode strings (OEM only when a server refuses
//! Unicode), extended session security, NTLMv2 responses only (never LM or
//! NTLMv1). What it leaves out: key exchange, signing and sealing (HTTP needs
//! none), the VERSION field, and the optional MIC, so it never adds an
//! MsvAvFlags pair claiming one.

use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use md4::{Digest, Md4};

type HmacMd5 = Hmac<md5::Md5>;

/// Every NTLM message starts with these 8 bytes.
pub const SIGNATURE: &[u8; 8] = b"NTLMSSP\0";

const NEGOTIATE: u32 = 1;
const CHALLENGE: u32 = 2;
const AUTHENTICATE: u32 = 3;

/// NegotiateFlags bits (\[MS-NLMP\] 2.2.2.5) this client sends or reads.
pub mod flags {
    pub const UNICODE: u32 = 0x0000_0001;
    pub const OEM: u32 = 0x0000_0002;
    pub const REQUEST_TARGET: u32 = 0x0000_0004;
    pub const NTLM: u32 = 0x0000_0200;
    pub const ALWAYS_SIGN: u32 = 0x0000_8000;
    pub const EXTENDED_SESSION_SECURITY: u32 = 0x0008_0000;
    pub const TARGET_INFO: u32 = 0x0080_0000;
    pub const KEY_128: u32 = 0x2000_0000;
    pub const KEY_56: u32 = 0x8000_0000;
}

/// The flags the NEGOTIATE message asks for; the AUTHENTICATE message keeps
/// those of them the server's CHALLENGE also set.
pub const CLIENT_FLAGS: u32 = flags::UNICODE
    | flags::OEM
    | flags::REQUEST_TARGET
    | flags::NTLM
    | flags::ALWAYS_SIGN
    | flags::EXTENDED_SESSION_SECURITY
    | flags::TARGET_INFO
    | flags::KEY_128
    | flags::KEY_56;

/// AV pair ids in a CHALLENGE's target information (\[MS-NLMP\] 2.2.2.1).
pub mod av {
    pub const EOL: u16 = 0x0000;
    pub const NB_COMPUTER_NAME: u16 = 0x0001;
    pub const NB_DOMAIN_NAME: u16 = 0x0002;
    pub const DNS_COMPUTER_NAME: u16 = 0x0003;
    pub const DNS_DOMAIN_NAME: u16 = 0x0004;
    pub const FLAGS: u16 = 0x0006;
    pub const TIMESTAMP: u16 = 0x0007;
}

/// A CHALLENGE message that cannot be used, or an AUTHENTICATE message that
/// cannot be written. Says what is wrong, never the message's bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NtlmError {
    #[error("the NTLM message has {0} bytes, fewer than a CHALLENGE message needs")]
    TooShort(usize),
    #[error("not an NTLM message (no NTLMSSP signature)")]
    NoSignature,
    #[error("expected an NTLM CHALLENGE message (type 2), got type {0}")]
    NotAChallenge(u32),
    #[error("the NTLM CHALLENGE's {0} field points outside the message")]
    OutOfBounds(&'static str),
    #[error("the NTLM CHALLENGE's target information is malformed: {0}")]
    BadTargetInfo(&'static str),
    #[error("the server accepts neither Unicode nor OEM strings in NTLM")]
    NoCharset,
    #[error("the server does not accept Unicode in NTLM, and the {0} is not plain ASCII")]
    NotAscii(&'static str),
    #[error("the NTLM answer's {0} would pass 64 KiB (the server sent that much target information)")]
    FieldTooLong(&'static str),
}

/// Who logs in. `DOMAIN\user` names the domain; `user@domain` (a UPN) and a
/// plain `user` go with an empty domain and the name as given, as Windows
/// sends them.
#[derive(Clone, PartialEq, Eq)]
pub struct Identity {
    pub user: String,
    pub domain: String,
    password: String,
}

impl Identity {
    pub fn new(login: &str, password: &str) -> Self {
        let (domain, user) = login.split_once('\\').unwrap_or(("", login));
        Self { user: user.to_string(), domain: domain.to_string(), password: password.to_string() }
    }
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("user", &self.user)
            .field("domain", &self.domain)
            .field("password", &"***")
            .finish()
    }
}

/// The NEGOTIATE message (type 1): flags only, no domain or workstation.
pub fn negotiate_message() -> Vec<u8> {
    const LEN: u32 = 32;
    let mut m = Vec::with_capacity(LEN as usize);
    m.extend_from_slice(SIGNATURE);
    m.extend_from_slice(&NEGOTIATE.to_le_bytes());
    m.extend_from_slice(&CLIENT_FLAGS.to_le_bytes());
    // DomainNameFields and WorkstationFields: empty.
    for _ in 0..2 {
        m.extend_from_slice(&[0, 0, 0, 0]);
        m.extend_from_slice(&LEN.to_le_bytes());
    }
    m
}

/// The parts of a CHALLENGE message (type 2) the answer is built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChallengeMessage {
    pub flags: u32,
    pub server_challenge: [u8; 8],
    /// TargetName as sent (UTF-16LE or OEM, per the flags).
    pub target_name: Vec<u8>,
    /// The AV pairs as sent, MsvAvEOL included; echoed in the NTLMv2 response.
    pub target_info: Vec<u8>,
    /// MsvAvTimestamp (a FILETIME), when the server sent one.
    pub timestamp: Option<u64>,
}

/// One AV pair of target information.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AvPair<'a> {
    pub id: u16,
    pub value: &'a [u8],
}

impl ChallengeMessage {
    /// Reads a CHALLENGE message. Older servers send the 32-byte form
    /// without target information; it is read as empty.
    pub fn parse(msg: &[u8]) -> Result<Self, NtlmError> {
        if msg.len() >= 8 && &msg[..8] != SIGNATURE {
            return Err(NtlmError::NoSignature);
        }
        if msg.len() < 32 {
            return Err(NtlmError::TooShort(msg.len()));
        }
        let kind = u32_at(msg, 8);
        if kind != CHALLENGE {
            return Err(NtlmError::NotAChallenge(kind));
        }
        let target_name = field(msg, 12, "TargetName")?.to_vec();
        let flags = u32_at(msg, 20);
        let server_challenge: [u8; 8] = msg[24..32].try_into().expect("8 bytes");
        let target_info = if msg.len() >= 48 { field(msg, 40, "TargetInfo")?.to_vec() } else { Vec::new() };
        let mut timestamp = None;
        for pair in av_pairs(&target_info)? {
            if pair.id == av::TIMESTAMP {
                let bytes: [u8; 8] =
                    pair.value.try_into().map_err(|_| NtlmError::BadTargetInfo("MsvAvTimestamp is not 8 bytes"))?;
                timestamp = Some(u64::from_le_bytes(bytes));
            }
        }
        Ok(Self { flags, server_challenge, target_name, target_info, timestamp })
    }

    /// The AV pairs of the target information.
    pub fn av_pairs(&self) -> Result<Vec<AvPair<'_>>, NtlmError> {
        av_pairs(&self.target_info)
    }
}

/// Splits target information into AV pairs, up to MsvAvEOL (which must be
/// there unless the information is empty).
pub fn av_pairs(target_info: &[u8]) -> Result<Vec<AvPair<'_>>, NtlmError> {
    let mut pairs = Vec::new();
    let mut at = 0;
    while at < target_info.len() {
        let header = target_info.get(at..at + 4).ok_or(NtlmError::BadTargetInfo("an AV pair header is cut off"))?;
        let id = u16::from_le_bytes([header[0], header[1]]);
        let len = u16::from_le_bytes([header[2], header[3]]) as usize;
        if id == av::EOL {
            return Ok(pairs);
        }
        let value =
            target_info.get(at + 4..at + 4 + len).ok_or(NtlmError::BadTargetInfo("an AV pair runs past the end"))?;
        pairs.push(AvPair { id, value });
        at += 4 + len;
    }
    if target_info.is_empty() { Ok(pairs) } else { Err(NtlmError::BadTargetInfo("no MsvAvEOL at the end")) }
}

/// MD4 of the UTF-16LE password: the NT hash.
pub fn nt_hash(password: &str) -> [u8; 16] {
    Md4::digest(utf16le(password)).into()
}

/// NTOWFv2 (\[MS-NLMP\] 3.3.2): HMAC_MD5(NT hash, UTF-16LE(UPPERCASE(user) + domain)).
/// It is the response key for both the NT and the LM response.
pub fn ntowf_v2(password: &str, user: &str, domain: &str) -> [u8; 16] {
    let mut data = utf16le(&uppercase(user));
    data.extend(utf16le(domain));
    hmac_md5(&nt_hash(password), &[&data])
}

/// What NTLMv2 computes from the response key and both challenges.
#[derive(Clone, PartialEq, Eq)]
pub struct V2Responses {
    /// NTProofStr followed by the client's blob ("temp").
    pub nt_response: Vec<u8>,
    /// LMv2: HMAC over both challenges plus the client challenge; all zero
    /// when the server sent a timestamp (\[MS-NLMP\] 3.1.5.1.2).
    pub lm_response: [u8; 24],
    pub session_base_key: [u8; 16],
}

impl V2Responses {
    pub fn nt_proof_str(&self) -> &[u8] {
        &self.nt_response[..16]
    }
}

impl std::fmt::Debug for V2Responses {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("V2Responses(***)")
    }
}

/// The NTLMv2 computation of \[MS-NLMP\] 3.3.2. `time` is a FILETIME;
/// `target_info` the server's AV pairs as sent.
pub fn ntlmv2_responses(
    response_key: &[u8; 16],
    server_challenge: &[u8; 8],
    client_challenge: &[u8; 8],
    time: u64,
    target_info: &[u8],
    zero_lm_response: bool,
) -> V2Responses {
    let mut temp = Vec::with_capacity(32 + target_info.len());
    temp.extend_from_slice(&[1, 1]); // Responserversion, HiResponserversion
    temp.extend_from_slice(&[0; 6]);
    temp.extend_from_slice(&time.to_le_bytes());
    temp.extend_from_slice(client_challenge);
    temp.extend_from_slice(&[0; 4]);
    temp.extend_from_slice(target_info);
    temp.extend_from_slice(&[0; 4]);
    let nt_proof_str = hmac_md5(response_key, &[server_challenge, &temp]);
    let session_base_key = hmac_md5(response_key, &[&nt_proof_str]);
    let mut lm_response = [0u8; 24];
    if !zero_lm_response {
        lm_response[..16].copy_from_slice(&hmac_md5(response_key, &[server_challenge, client_challenge]));
        lm_response[16..].copy_from_slice(client_challenge);
    }
    let mut nt_response = nt_proof_str.to_vec();
    nt_response.extend_from_slice(&temp);
    V2Responses { nt_response, lm_response, session_base_key }
}

/// The AUTHENTICATE message (type 3) answering `challenge`. `client_challenge`
/// must be fresh random bytes; `now` is the client's clock as a FILETIME
/// (see [`filetime`]), used only when the server sent no timestamp.
pub fn authenticate_message(
    identity: &Identity,
    challenge: &ChallengeMessage,
    client_challenge: &[u8; 8],
    now: u64,
) -> Result<Vec<u8>, NtlmError> {
    let mut negotiated = (challenge.flags & CLIENT_FLAGS) | flags::NTLM;
    let unicode = negotiated & flags::UNICODE != 0;
    if unicode {
        negotiated &= !flags::OEM;
    } else if negotiated & flags::OEM == 0 {
        return Err(NtlmError::NoCharset);
    }
    let text = |s: &str, what: &'static str| {
        if unicode {
            Ok(utf16le(s))
        } else if s.is_ascii() {
            Ok(s.as_bytes().to_vec())
        } else {
            Err(NtlmError::NotAscii(what))
        }
    };
    let domain = text(&identity.domain, "domain")?;
    let user = text(&identity.user, "user name")?;

    let key = ntowf_v2(&identity.password, &identity.user, &identity.domain);
    let responses = ntlmv2_responses(
        &key,
        &challenge.server_challenge,
        client_challenge,
        challenge.timestamp.unwrap_or(now),
        &challenge.target_info,
        challenge.timestamp.is_some(),
    );

    // Header (64 bytes, no VERSION, no MIC), then the payload in this order.
    const HEADER: usize = 64;
    let payload: [&[u8]; 6] = [&domain, &user, &[], &responses.lm_response, &responses.nt_response, &[]];
    let mut offsets = [0u32; 6];
    let mut at = HEADER;
    for (offset, part) in offsets.iter_mut().zip(payload) {
        *offset = u32::try_from(at).map_err(|_| NtlmError::FieldTooLong("message"))?;
        at += part.len();
    }
    let [domain_at, user_at, workstation_at, lm_at, nt_at, key_at] = offsets;
    let mut m = Vec::with_capacity(at);
    m.extend_from_slice(SIGNATURE);
    m.extend_from_slice(&AUTHENTICATE.to_le_bytes());
    put_fields(&mut m, responses.lm_response.len(), lm_at, "LmChallengeResponse")?;
    put_fields(&mut m, responses.nt_response.len(), nt_at, "NtChallengeResponse")?;
    put_fields(&mut m, domain.len(), domain_at, "DomainName")?;
    put_fields(&mut m, user.len(), user_at, "UserName")?;
    put_fields(&mut m, 0, workstation_at, "Workstation")?;
    put_fields(&mut m, 0, key_at, "EncryptedRandomSessionKey")?; // no key exchange
    m.extend_from_slice(&negotiated.to_le_bytes());
    debug_assert_eq!(m.len(), HEADER);
    for part in payload {
        m.extend_from_slice(part);
    }
    Ok(m)
}

/// A point in time as a Windows FILETIME: 100-nanosecond ticks since 1601-01-01 UTC.
pub fn filetime(t: SystemTime) -> u64 {
    const SECONDS_1601_TO_1970: u64 = 11_644_473_600;
    let since_1970 = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    (since_1970.as_secs() + SECONDS_1601_TO_1970) * 10_000_000 + u64::from(since_1970.subsec_nanos() / 100)
}

fn utf16le(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

/// Upper case letter by letter, keeping letters whose upper case is more
/// than one letter (ß) as they are, the way Windows keeps lengths.
fn uppercase(s: &str) -> String {
    s.chars()
        .map(|c| {
            let mut upper = c.to_uppercase();
            match (upper.next(), upper.next()) {
                (Some(one), None) => one,
                _ => c,
            }
        })
        .collect()
}

fn hmac_md5(key: &[u8], parts: &[&[u8]]) -> [u8; 16] {
    let mut mac = HmacMd5::new_from_slice(key).expect("HMAC takes keys of any length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

fn u32_at(msg: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(msg[at..at + 4].try_into().expect("4 bytes"))
}

/// A payload field (Len, MaxLen, BufferOffset) at `at`; empty fields may
/// carry any offset.
fn field<'a>(msg: &'a [u8], at: usize, name: &'static str) -> Result<&'a [u8], NtlmError> {
    let len = u16::from_le_bytes([msg[at], msg[at + 1]]) as usize;
    if len == 0 {
        return Ok(&[]);
    }
    let offset = u32_at(msg, at + 4) as usize;
    offset.checked_add(len).and_then(|end| msg.get(offset..end)).ok_or(NtlmError::OutOfBounds(name))
}

/// Writes a field's (Len, MaxLen, BufferOffset). The NT response carries the
/// server's target information, so a server decides how long it is.
fn put_fields(m: &mut Vec<u8>, len: usize, offset: u32, name: &'static str) -> Result<(), NtlmError> {
    let len = u16::try_from(len).map_err(|_| NtlmError::FieldTooLong(name))?;
    m.extend_from_slice(&len.to_le_bytes());
    m.extend_from_slice(&len.to_le_bytes());
    m.extend_from_slice(&offset.to_le_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    const SERVER_CHALLENGE: [u8; 8] = [0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef];
    const CLIENT_CHALLENGE: [u8; 8] = [0xaa; 8];

    /// \[MS-NLMP\] 4.2.4: the target information of the CHALLENGE in 4.2.4.3
    /// (NetBIOS domain "Domain", NetBIOS computer "Server", MsvAvEOL).
    fn spec_target_info() -> Vec<u8> {
        let mut t = vec![0x02, 0x00, 0x0c, 0x00];
        t.extend(utf16le("Domain"));
        t.extend([0x01, 0x00, 0x0c, 0x00]);
        t.extend(utf16le("Server"));
        t.extend([0, 0, 0, 0]);
        t
    }

    /// \[MS-NLMP\] 4.2.4.3: the CHALLENGE_MESSAGE of the NTLMv2 example.
    fn spec_challenge_message() -> Vec<u8> {
        hex("4e544c4d53535000 02000000 0c000c0038000000 33828ae2 0123456789abcdef 0000000000000000
             2400240044000000 060070170000000f 530065007200760065007200
             02000c0044006f006d00610069006e00 01000c00530065007200760065007200 00000000")
    }

    /// Reads a payload field of a message this module wrote.
    fn payload(msg: &[u8], at: usize) -> &[u8] {
        let len = u16::from_le_bytes([msg[at], msg[at + 1]]) as usize;
        let offset = u32_at(msg, at + 4) as usize;
        &msg[offset..offset + len]
    }

    /// A CHALLENGE message as a server writes it (for round trips).
    fn challenge_bytes(c: &ChallengeMessage) -> Vec<u8> {
        let mut m = SIGNATURE.to_vec();
        m.extend(CHALLENGE.to_le_bytes());
        put_fields(&mut m, c.target_name.len(), 48, "TargetName").unwrap();
        m.extend(c.flags.to_le_bytes());
        m.extend(c.server_challenge);
        m.extend([0; 8]);
        put_fields(&mut m, c.target_info.len(), 48 + c.target_name.len() as u32, "TargetInfo").unwrap();
        m.extend(&c.target_name);
        m.extend(&c.target_info);
        m
    }

    fn target_info_with_timestamp(time: u64) -> Vec<u8> {
        let mut t = spec_target_info();
        t.truncate(t.len() - 4);
        t.extend([0x07, 0x00, 0x08, 0x00]);
        t.extend(time.to_le_bytes());
        t.extend([0, 0, 0, 0]);
        t
    }

    #[test]
    fn ntowf_v2_matches_the_spec() {
        // [MS-NLMP] 4.2.4.1.1
        assert_eq!(ntowf_v2("Password", "User", "Domain").to_vec(), hex("0c868a403bfd7a93a3001ef22ef02e3f"));
        // The user name is upper-cased, the domain is not.
        assert_eq!(ntowf_v2("Password", "USER", "Domain"), ntowf_v2("Password", "user", "Domain"));
        assert_ne!(ntowf_v2("Password", "User", "Domain"), ntowf_v2("Password", "User", "DOMAIN"));
    }

    #[test]
    fn ntlmv2_responses_match_the_spec() {
        let key = ntowf_v2("Password", "User", "Domain");
        let r = ntlmv2_responses(&key, &SERVER_CHALLENGE, &CLIENT_CHALLENGE, 0, &spec_target_info(), false);
        // 4.2.4.2.2 NTLMv2 Response: NTProofStr
        assert_eq!(r.nt_proof_str(), hex("68cd0ab851e51c96aabc927bebef6a1c"));
        // 4.2.4.2.1 LMv2 Response
        assert_eq!(r.lm_response.to_vec(), hex("86c35097ac9cec102554764a57cccc19 aaaaaaaaaaaaaaaa"));
        // 4.2.4.1.2 Session Base Key
        assert_eq!(r.session_base_key.to_vec(), hex("8de40ccadbc14a82f15cb0ad0de95ca3"));
        // The blob ("temp"): versions, zero, time, client challenge, zero, target info, zero.
        let mut temp = hex("0101000000000000 0000000000000000 aaaaaaaaaaaaaaaa 00000000");
        temp.extend(spec_target_info());
        temp.extend([0; 4]);
        assert_eq!(&r.nt_response[16..], &temp[..]);
        assert!(!format!("{r:?}").contains("68"), "Debug hides the responses");
    }

    #[test]
    fn the_spec_challenge_parses() {
        let c = ChallengeMessage::parse(&spec_challenge_message()).unwrap();
        assert_eq!(c.flags, 0xe28a_8233);
        assert_eq!(c.server_challenge, SERVER_CHALLENGE);
        assert_eq!(c.target_name, utf16le("Server"));
        assert_eq!(c.target_info, spec_target_info());
        assert_eq!(c.timestamp, None);
        let pairs = c.av_pairs().unwrap();
        assert_eq!(
            pairs,
            vec![
                AvPair { id: av::NB_DOMAIN_NAME, value: &utf16le("Domain") },
                AvPair { id: av::NB_COMPUTER_NAME, value: &utf16le("Server") },
            ]
        );
    }

    #[test]
    fn authenticate_answers_the_spec_challenge() {
        let c = ChallengeMessage::parse(&spec_challenge_message()).unwrap();
        let m = authenticate_message(&Identity::new("Domain\\User", "Password"), &c, &CLIENT_CHALLENGE, 0).unwrap();
        assert_eq!(&m[..8], SIGNATURE);
        assert_eq!(u32_at(&m, 8), 3);
        // No timestamp from the server: the LMv2 response is sent.
        assert_eq!(payload(&m, 12), hex("86c35097ac9cec102554764a57cccc19 aaaaaaaaaaaaaaaa"));
        let nt = payload(&m, 20);
        assert_eq!(&nt[..16], hex("68cd0ab851e51c96aabc927bebef6a1c"));
        assert_eq!(nt.len(), 16 + 28 + spec_target_info().len() + 4);
        assert_eq!(payload(&m, 28), utf16le("Domain"));
        assert_eq!(payload(&m, 36), utf16le("User"));
        assert!(payload(&m, 44).is_empty(), "no workstation");
        assert!(payload(&m, 52).is_empty(), "no key exchange");
        let negotiated = u32_at(&m, 60);
        assert_eq!(negotiated, 0xa088_8201, "the spec's flags within ours, Unicode over OEM");
        assert_eq!(
            negotiated & (flags::OEM | 0x4000_0000 | 0x0200_0000 | 0x30),
            0,
            "no OEM, KEY_EXCH, VERSION, SIGN/SEAL"
        );
        // The payload starts right after the 64-byte header and ends the message.
        assert_eq!(u32_at(&m, 32), 64);
        assert_eq!(m.len(), 64 + 12 + 8 + 24 + nt.len());
    }

    #[test]
    fn a_server_timestamp_is_used_and_zeroes_the_lm_response() {
        let time = 0x01d2_d400_fdc8_0b80;
        let c = ChallengeMessage {
            flags: CLIENT_FLAGS,
            server_challenge: SERVER_CHALLENGE,
            target_name: utf16le("Domain"),
            target_info: target_info_with_timestamp(time),
            timestamp: Some(time),
        };
        let parsed = ChallengeMessage::parse(&challenge_bytes(&c)).unwrap();
        assert_eq!(parsed, c);
        let m = authenticate_message(&Identity::new("User", "Password"), &parsed, &CLIENT_CHALLENGE, 42).unwrap();
        assert_eq!(payload(&m, 12), [0u8; 24]);
        let nt = payload(&m, 20);
        assert_eq!(nt[16 + 8..16 + 16], time.to_le_bytes(), "the server's time, not the client's");
        let key = ntowf_v2("Password", "User", "");
        let expected = ntlmv2_responses(&key, &SERVER_CHALLENGE, &CLIENT_CHALLENGE, time, &c.target_info, true);
        assert_eq!(nt, expected.nt_response);
        assert!(payload(&m, 28).is_empty(), "a plain user name has an empty domain");
    }

    #[test]
    fn without_a_server_timestamp_the_client_clock_is_used() {
        let c = ChallengeMessage::parse(&spec_challenge_message()).unwrap();
        let now = filetime(SystemTime::now());
        let m = authenticate_message(&Identity::new("u", "p"), &c, &CLIENT_CHALLENGE, now).unwrap();
        assert_eq!(payload(&m, 20)[16 + 8..16 + 16], now.to_le_bytes());
        assert_ne!(payload(&m, 12), [0u8; 24]);
    }

    #[test]
    fn user_name_forms() {
        let id = Identity::new("CONTOSO\\svc-robot", "pw");
        assert_eq!((id.domain.as_str(), id.user.as_str()), ("CONTOSO", "svc-robot"));
        let id = Identity::new("svc-robot@contoso.local", "pw");
        assert_eq!((id.domain.as_str(), id.user.as_str()), ("", "svc-robot@contoso.local"));
        let id = Identity::new("svc-robot", "pw");
        assert_eq!((id.domain.as_str(), id.user.as_str()), ("", "svc-robot"));
        let shown = format!("{:?}", Identity::new("D\\u", "hunter2"));
        assert!(!shown.contains("hunter2") && shown.contains("***"));
        // A UPN is sent whole, upper-cased in the hash with an empty domain.
        let c = ChallengeMessage::parse(&spec_challenge_message()).unwrap();
        let m = authenticate_message(&Identity::new("user@contoso.local", "pw"), &c, &CLIENT_CHALLENGE, 0).unwrap();
        assert_eq!(payload(&m, 36), utf16le("user@contoso.local"));
        assert!(payload(&m, 28).is_empty());
    }

    #[test]
    fn uppercase_keeps_lengths() {
        assert_eq!(uppercase("straße-ü"), "STRAßE-Ü");
    }

    #[test]
    fn negotiate_message_layout() {
        let m = negotiate_message();
        assert_eq!(m.len(), 32);
        assert_eq!(&m[..8], SIGNATURE);
        assert_eq!(u32_at(&m, 8), 1);
        let f = u32_at(&m, 12);
        for wanted in [flags::UNICODE, flags::NTLM, flags::EXTENDED_SESSION_SECURITY, flags::REQUEST_TARGET] {
            assert_eq!(f & wanted, wanted);
        }
        assert_eq!(f & 0x4000_0000, 0, "no key exchange");
    }

    #[test]
    fn challenge_round_trips() {
        let short = ChallengeMessage {
            flags: flags::UNICODE | flags::NTLM,
            server_challenge: [7; 8],
            target_name: Vec::new(),
            target_info: Vec::new(),
            timestamp: None,
        };
        assert_eq!(ChallengeMessage::parse(&challenge_bytes(&short)).unwrap(), short);
        // The old 32-byte form without target information.
        assert_eq!(ChallengeMessage::parse(&challenge_bytes(&short)[..32]).unwrap(), short);
        let full = ChallengeMessage {
            flags: 0xe28a_8235,
            server_challenge: SERVER_CHALLENGE,
            target_name: utf16le("CONTOSO"),
            target_info: target_info_with_timestamp(7),
            timestamp: Some(7),
        };
        assert_eq!(ChallengeMessage::parse(&challenge_bytes(&full)).unwrap(), full);
    }

    #[test]
    fn malformed_challenges_get_clear_errors() {
        let good = spec_challenge_message();
        assert_eq!(ChallengeMessage::parse(b"NTLMSSP\0\x02"), Err(NtlmError::TooShort(9)));
        assert_eq!(ChallengeMessage::parse(b"HTTP/1.1 401 Unauthorized....."), Err(NtlmError::NoSignature));
        assert_eq!(ChallengeMessage::parse(&negotiate_message()), Err(NtlmError::NotAChallenge(1)));

        let mut m = good.clone();
        m[44] = 0xff; // TargetInfo offset beyond the end
        assert_eq!(ChallengeMessage::parse(&m), Err(NtlmError::OutOfBounds("TargetInfo")));
        let mut m = good.clone();
        m[12] = 0x40; // TargetName longer than the message
        assert_eq!(ChallengeMessage::parse(&m), Err(NtlmError::OutOfBounds("TargetName")));

        let mut m = good.clone();
        m.truncate(m.len() - 4); // no MsvAvEOL, TargetInfo shortened to match
        m[40] -= 4;
        assert_eq!(ChallengeMessage::parse(&m), Err(NtlmError::BadTargetInfo("no MsvAvEOL at the end")));
        let mut m = good.clone();
        m[0x44 + 2] = 0x30; // the first AV pair claims 48 bytes
        assert_eq!(ChallengeMessage::parse(&m), Err(NtlmError::BadTargetInfo("an AV pair runs past the end")));

        let mut bad_time = spec_target_info();
        bad_time.splice(0..0, [0x07, 0x00, 0x04, 0x00, 1, 2, 3, 4]);
        let c = ChallengeMessage { target_info: bad_time, ..ChallengeMessage::parse(&good).unwrap() };
        assert_eq!(
            ChallengeMessage::parse(&challenge_bytes(&c)),
            Err(NtlmError::BadTargetInfo("MsvAvTimestamp is not 8 bytes"))
        );
        assert!(NtlmError::OutOfBounds("TargetInfo").to_string().contains("TargetInfo"));

        // Any cut of a good message is an error or a shorter valid one, never a panic.
        for len in 0..good.len() {
            let _ = ChallengeMessage::parse(&good[..len]);
        }
    }

    #[test]
    fn oem_only_servers_get_ascii_or_an_error() {
        let c = ChallengeMessage {
            flags: flags::OEM | flags::NTLM | flags::TARGET_INFO,
            ..ChallengeMessage::parse(&spec_challenge_message()).unwrap()
        };
        let m = authenticate_message(&Identity::new("Domain\\User", "Password"), &c, &CLIENT_CHALLENGE, 0).unwrap();
        assert_eq!(payload(&m, 36), &b"User"[..]);
        assert_eq!(u32_at(&m, 60) & (flags::OEM | flags::UNICODE), flags::OEM);
        assert_eq!(
            authenticate_message(&Identity::new("Jürgen", "p"), &c, &CLIENT_CHALLENGE, 0),
            Err(NtlmError::NotAscii("user name"))
        );
        let neither = ChallengeMessage { flags: flags::NTLM, ..c };
        assert_eq!(
            authenticate_message(&Identity::new("u", "p"), &neither, &CLIENT_CHALLENGE, 0),
            Err(NtlmError::NoCharset)
        );
    }

    #[test]
    fn filetime_counts_from_1601() {
        assert_eq!(filetime(UNIX_EPOCH), 116_444_736_000_000_000);
        assert_eq!(filetime(UNIX_EPOCH + std::time::Duration::from_micros(1)), 116_444_736_000_000_010);
    }

    #[test]
    fn a_challenge_with_64_kib_of_target_info_is_an_error_not_a_panic() {
        let good = spec_challenge_message();
        let mut c = ChallengeMessage::parse(&good).unwrap();
        // A server's TargetInfo as long as its 16-bit length allows.
        let mut info = Vec::new();
        info.extend_from_slice(&2u16.to_le_bytes());
        info.extend_from_slice(&(65_500u16).to_le_bytes());
        info.extend(std::iter::repeat_n(0u8, 65_500));
        info.extend_from_slice(&[0, 0, 0, 0]);
        c.target_info = info;
        let parsed = ChallengeMessage::parse(&challenge_bytes(&c)).unwrap();
        let err = authenticate_message(&Identity::new("u", "p"), &parsed, &CLIENT_CHALLENGE, 0).err();
        assert!(matches!(err, Some(NtlmError::FieldTooLong("NtChallengeResponse"))), "{err:?}");
    }
}
