//! NTLM as a server checks it ([MS-NLMP]): reading NEGOTIATE and AUTHENTICATE messages, building
//! the CHALLENGE message, and verifying an NTLMv2 response (and the MIC when the client says it sent
//! one) against a user's password. Pure functions; the HTTP side (MS-NTHT: which connection a
//! challenge belongs to, expiry, users) is in `ewsauth`.
//!
//! Only NTLMv2 is accepted: an NTLMv1 (24-byte) or LM-only response, and anonymous sign-in, are
//! refused. Channel bindings (`MsvAvChannelBindings`, Extended Protection) are not checked, as on
//! an Exchange Server with Extended Protection off.

use hmac::{Hmac, Mac};
use md4::{Digest, Md4};
use md5::Md5;

type HmacMd5 = Hmac<Md5>;

/// `NTLMSSP\0`, the start of every message (2.2.1).
pub(crate) const SIGNATURE: &[u8; 8] = b"NTLMSSP\0";
pub(crate) const NEGOTIATE_MESSAGE: u32 = 1;
pub(crate) const CHALLENGE_MESSAGE: u32 = 2;
pub(crate) const AUTHENTICATE_MESSAGE: u32 = 3;

/// NegotiateFlags (2.2.2.5).
pub(crate) mod flags {
    pub const UNICODE: u32 = 0x0000_0001;
    pub const OEM: u32 = 0x0000_0002;
    pub const REQUEST_TARGET: u32 = 0x0000_0004;
    pub const SIGN: u32 = 0x0000_0010;
    pub const SEAL: u32 = 0x0000_0020;
    pub const NTLM: u32 = 0x0000_0200;
    pub const ANONYMOUS: u32 = 0x0000_0800;
    pub const ALWAYS_SIGN: u32 = 0x0000_8000;
    pub const TARGET_TYPE_DOMAIN: u32 = 0x0001_0000;
    pub const EXTENDED_SESSIONSECURITY: u32 = 0x0008_0000;
    pub const IDENTIFY: u32 = 0x0010_0000;
    pub const TARGET_INFO: u32 = 0x0080_0000;
    pub const VERSION: u32 = 0x0200_0000;
    pub const NEGOTIATE_128: u32 = 0x2000_0000;
    pub const KEY_EXCH: u32 = 0x4000_0000;
    pub const NEGOTIATE_56: u32 = 0x8000_0000;
}

/// AvId values of AV_PAIR (2.2.2.1).
pub(crate) mod av {
    pub const EOL: u16 = 0;
    pub const NB_COMPUTER_NAME: u16 = 1;
    pub const NB_DOMAIN_NAME: u16 = 2;
    pub const DNS_COMPUTER_NAME: u16 = 3;
    pub const DNS_DOMAIN_NAME: u16 = 4;
    pub const FLAGS: u16 = 6;
    pub const TIMESTAMP: u16 = 7;
    /// `MsvAvFlags` bit: the AUTHENTICATE_MESSAGE carries a MIC.
    pub const FLAG_MIC_PRESENT: u32 = 0x2;
}

/// Length of the NTLMv2_CLIENT_CHALLENGE before its AV pairs (2.2.2.7).
const CLIENT_CHALLENGE_HEADER: usize = 28;
/// Where the MIC sits in an AUTHENTICATE_MESSAGE (after NegotiateFlags and Version).
const MIC_AT: usize = 72;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum NtlmError {
    #[error("malformed NTLM message: {0}")]
    Malformed(&'static str),
    #[error("NTLM message of type {found} where type {expected} was expected")]
    UnexpectedType { found: u32, expected: u32 },
    #[error("anonymous NTLM authentication is not accepted")]
    Anonymous,
    #[error("NTLMv1 and LM responses are not accepted, only NTLMv2")]
    NotV2,
    #[error("the NTLMv2 response does not match the password")]
    WrongResponse,
    #[error("the MIC of the AUTHENTICATE message does not match")]
    BadMic,
}

type Result<T> = std::result::Result<T, NtlmError>;

fn u16_at(b: &[u8], at: usize) -> Result<u16> {
    b.get(at..at + 2).map(|s| u16::from_le_bytes([s[0], s[1]])).ok_or(NtlmError::Malformed("too short"))
}

fn u32_at(b: &[u8], at: usize) -> Result<u32> {
    b.get(at..at + 4).map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]])).ok_or(NtlmError::Malformed("too short"))
}

/// The payload a `*Fields` structure (Len, MaxLen, BufferOffset) at `at` points to.
fn field(b: &[u8], at: usize) -> Result<&[u8]> {
    let len = u16_at(b, at)? as usize;
    let offset = u32_at(b, at + 4)? as usize;
    if len == 0 {
        return Ok(&[]);
    }
    b.get(offset..offset + len).ok_or(NtlmError::Malformed("a field points outside the message"))
}

/// The MessageType of a message, after checking its signature.
pub(crate) fn message_type(b: &[u8]) -> Result<u32> {
    if b.len() < 12 || &b[..8] != SIGNATURE {
        return Err(NtlmError::Malformed("no NTLMSSP signature"));
    }
    u32_at(b, 8)
}

fn expect_type(b: &[u8], expected: u32) -> Result<()> {
    match message_type(b)? {
        found if found == expected => Ok(()),
        found => Err(NtlmError::UnexpectedType { found, expected }),
    }
}

/// A NEGOTIATE_MESSAGE (2.2.1.1): only its flags matter to the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Negotiate {
    pub flags: u32,
}

pub(crate) fn parse_negotiate(b: &[u8]) -> Result<Negotiate> {
    expect_type(b, NEGOTIATE_MESSAGE)?;
    Ok(Negotiate { flags: u32_at(b, 12)? })
}

/// The flags of the CHALLENGE_MESSAGE for a client's NEGOTIATE flags: Unicode (OEM only when the
/// client cannot do Unicode), NTLM, target info and a domain target always; signing, sealing,
/// extended session security, key exchange, 128/56-bit, version and identify echoed when asked.
pub(crate) fn challenge_flags(client: u32) -> u32 {
    use flags::*;
    let mut f = NTLM | TARGET_INFO | TARGET_TYPE_DOMAIN | REQUEST_TARGET;
    f |= if client & UNICODE != 0 || client & OEM == 0 { UNICODE } else { OEM };
    for echo in
        [SIGN, SEAL, ALWAYS_SIGN, EXTENDED_SESSIONSECURITY, IDENTIFY, VERSION, NEGOTIATE_128, KEY_EXCH, NEGOTIATE_56]
    {
        f |= client & echo;
    }
    f
}

pub(crate) fn utf16le(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

fn push_av(out: &mut Vec<u8>, id: u16, value: &[u8]) {
    out.extend_from_slice(&id.to_le_bytes());
    out.extend_from_slice(&(value.len() as u16).to_le_bytes());
    out.extend_from_slice(value);
}

/// The server's names, as the CHALLENGE_MESSAGE's TargetInfo gives them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ServerNames<'a> {
    pub nb_domain: &'a str,
    pub nb_computer: &'a str,
    pub dns_domain: &'a str,
    pub dns_computer: &'a str,
}

/// TargetInfo: MsvAvNbDomainName, MsvAvNbComputerName, MsvAvDnsDomainName, MsvAvDnsComputerName,
/// MsvAvTimestamp (FILETIME), MsvAvEOL.
pub(crate) fn target_info(names: &ServerNames<'_>, filetime: u64) -> Vec<u8> {
    let mut out = Vec::new();
    push_av(&mut out, av::NB_DOMAIN_NAME, &utf16le(names.nb_domain));
    push_av(&mut out, av::NB_COMPUTER_NAME, &utf16le(names.nb_computer));
    push_av(&mut out, av::DNS_DOMAIN_NAME, &utf16le(names.dns_domain));
    push_av(&mut out, av::DNS_COMPUTER_NAME, &utf16le(names.dns_computer));
    push_av(&mut out, av::TIMESTAMP, &filetime.to_le_bytes());
    push_av(&mut out, av::EOL, &[]);
    out
}

/// Unix milliseconds as a FILETIME: 100 ns ticks since 1601-01-01 UTC.
pub(crate) fn filetime(unix_ms: i64) -> u64 {
    const EPOCH_DIFF_S: i64 = 11_644_473_600;
    ((unix_ms + EPOCH_DIFF_S * 1000).max(0) as u64) * 10_000
}

/// What goes into a CHALLENGE_MESSAGE (2.2.1.2).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Challenge<'a> {
    pub flags: u32,
    pub server_challenge: [u8; 8],
    pub target_name: &'a str,
    pub target_info: &'a [u8],
    /// The VERSION structure; sent as zeros unless `flags` has NTLMSSP_NEGOTIATE_VERSION.
    pub version: [u8; 8],
}

pub(crate) fn build_challenge(c: &Challenge<'_>) -> Vec<u8> {
    const HEADER: usize = 56;
    let name = if c.flags & flags::UNICODE != 0 {
        utf16le(c.target_name)
    } else {
        c.target_name.chars().map(|ch| if ch.is_ascii() { ch as u8 } else { b'?' }).collect()
    };
    let mut m = Vec::with_capacity(HEADER + name.len() + c.target_info.len());
    m.extend_from_slice(SIGNATURE);
    m.extend_from_slice(&CHALLENGE_MESSAGE.to_le_bytes());
    let fields = |m: &mut Vec<u8>, len: usize, offset: usize| {
        m.extend_from_slice(&(len as u16).to_le_bytes());
        m.extend_from_slice(&(len as u16).to_le_bytes());
        m.extend_from_slice(&(offset as u32).to_le_bytes());
    };
    fields(&mut m, name.len(), HEADER);
    m.extend_from_slice(&c.flags.to_le_bytes());
    m.extend_from_slice(&c.server_challenge);
    m.extend_from_slice(&[0; 8]);
    fields(&mut m, c.target_info.len(), HEADER + name.len());
    m.extend_from_slice(if c.flags & flags::VERSION != 0 { &c.version } else { &[0; 8] });
    m.extend_from_slice(&name);
    m.extend_from_slice(c.target_info);
    m
}

/// An AUTHENTICATE_MESSAGE (2.2.1.3), strings decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Authenticate {
    pub flags: u32,
    pub lm_response: Vec<u8>,
    pub nt_response: Vec<u8>,
    pub domain: String,
    pub user: String,
    pub workstation: String,
    pub encrypted_session_key: Vec<u8>,
    /// The message as received (the MIC is computed over it).
    pub raw: Vec<u8>,
}

pub(crate) fn parse_authenticate(b: &[u8]) -> Result<Authenticate> {
    expect_type(b, AUTHENTICATE_MESSAGE)?;
    if b.len() < 64 {
        return Err(NtlmError::Malformed("AUTHENTICATE_MESSAGE too short"));
    }
    let flags = u32_at(b, 60)?;
    let string = |at: usize| -> Result<String> {
        let raw = field(b, at)?;
        if flags & flags::UNICODE != 0 {
            if raw.len() % 2 != 0 {
                return Err(NtlmError::Malformed("odd length of a Unicode string"));
            }
            let units: Vec<u16> = raw.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
            String::from_utf16(&units).map_err(|_| NtlmError::Malformed("not UTF-16"))
        } else {
            Ok(raw.iter().map(|&c| c as char).collect())
        }
    };
    Ok(Authenticate {
        flags,
        lm_response: field(b, 12)?.to_vec(),
        nt_response: field(b, 20)?.to_vec(),
        domain: string(28)?,
        user: string(36)?,
        workstation: string(44)?,
        encrypted_session_key: field(b, 52)?.to_vec(),
        raw: b.to_vec(),
    })
}

/// HMAC_MD5 over the concatenation of `parts`.
pub(crate) fn hmac_md5(key: &[u8], parts: &[&[u8]]) -> [u8; 16] {
    let mut mac = HmacMd5::new_from_slice(key).expect("HMAC takes keys of any length");
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// MD4(UNICODE(password)): the NT hash (NTOWFv1).
pub(crate) fn nt_hash(password: &str) -> [u8; 16] {
    Md4::digest(utf16le(password)).into()
}

/// Windows upper-cases a user name character by character; a character whose upper case is more
/// than one character (ß) stays as it is.
fn upper(s: &str) -> String {
    s.chars()
        .map(|c| {
            let mut u = c.to_uppercase();
            match (u.next(), u.next()) {
                (Some(one), None) => one,
                _ => c,
            }
        })
        .collect()
}

/// NTOWFv2 (3.3.2): HMAC_MD5(MD4(UNICODE(Passwd)), UNICODE(Uppercase(User) + UserDom)).
pub(crate) fn ntowfv2(password: &str, user: &str, domain: &str) -> [u8; 16] {
    hmac_md5(&nt_hash(password), &[&utf16le(&(upper(user) + domain))])
}

/// RC4 (the key exchange's RC4K).
pub(crate) fn rc4(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut s: [u8; 256] = std::array::from_fn(|i| i as u8);
    let mut j = 0u8;
    for i in 0..256 {
        j = j.wrapping_add(s[i]).wrapping_add(key[i % key.len()]);
        s.swap(i, j as usize);
    }
    let (mut i, mut j) = (0u8, 0u8);
    data.iter()
        .map(|&b| {
            i = i.wrapping_add(1);
            j = j.wrapping_add(s[i as usize]);
            s.swap(i as usize, j as usize);
            b ^ s[s[i as usize].wrapping_add(s[j as usize]) as usize]
        })
        .collect()
}

fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The AV pairs of a TargetInfo (or of an NTLMv2 client challenge), up to MsvAvEOL.
pub(crate) fn av_pairs(mut b: &[u8]) -> Result<Vec<(u16, &[u8])>> {
    let mut out = Vec::new();
    loop {
        let id = u16_at(b, 0)?;
        let len = u16_at(b, 2)? as usize;
        let value = b.get(4..4 + len).ok_or(NtlmError::Malformed("an AV pair runs past the end"))?;
        if id == av::EOL {
            return Ok(out);
        }
        out.push((id, value));
        b = &b[4 + len..];
    }
}

/// What a verified AUTHENTICATE_MESSAGE yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Verified {
    /// ExportedSessionKey (3.1.5.1.2): the RandomSessionKey with key exchange, else the
    /// KeyExchangeKey (= SessionBaseKey for NTLMv2).
    pub session_key: [u8; 16],
    /// Whether a MIC was present and checked.
    pub mic_checked: bool,
}

/// Checks an AUTHENTICATE_MESSAGE against a password (3.2.5.1.2, 3.3.2): NTProofStr =
/// HMAC_MD5(NTOWFv2, ServerChallenge + temp) must be the first 16 bytes of the NtChallengeResponse,
/// and when the client's MsvAvFlags announce a MIC, it must equal HMAC_MD5(ExportedSessionKey,
/// NEGOTIATE + CHALLENGE + AUTHENTICATE with the MIC zeroed). `negotiate` and `challenge` are the
/// messages of this handshake as they were sent.
pub(crate) fn verify(
    auth: &Authenticate,
    password: &str,
    server_challenge: &[u8; 8],
    negotiate: &[u8],
    challenge: &[u8],
) -> Result<Verified> {
    let nt = &auth.nt_response;
    if auth.flags & flags::ANONYMOUS != 0 || (auth.user.is_empty() && nt.is_empty()) {
        return Err(NtlmError::Anonymous);
    }
    if nt.len() <= 24 {
        // 24 bytes: NTLMv1; none: LM only.
        return Err(NtlmError::NotV2);
    }
    if nt.len() < 16 + CLIENT_CHALLENGE_HEADER + 4 {
        return Err(NtlmError::Malformed("NTLMv2 response too short"));
    }
    let (proof, temp) = nt.split_at(16);
    if temp[0] != 1 || temp[1] != 1 {
        return Err(NtlmError::Malformed("NTLMv2_CLIENT_CHALLENGE is not version 1"));
    }
    let key = ntowfv2(password, &auth.user, &auth.domain);
    let expected = hmac_md5(&key, &[server_challenge, temp]);
    if !same_bytes(&expected, proof) {
        return Err(NtlmError::WrongResponse);
    }
    let session_base_key = hmac_md5(&key, &[proof]);
    let session_key: [u8; 16] = match auth.encrypted_session_key.len() {
        16 if auth.flags & flags::KEY_EXCH != 0 => {
            rc4(&session_base_key, &auth.encrypted_session_key).try_into().expect("RC4 keeps the length")
        }
        _ => session_base_key,
    };
    let client_flags = av_pairs(&temp[CLIENT_CHALLENGE_HEADER..])?
        .iter()
        .find(|(id, _)| *id == av::FLAGS)
        .and_then(|(_, v)| v.get(..4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])))
        .unwrap_or(0);
    let mic_checked = client_flags & av::FLAG_MIC_PRESENT != 0;
    if mic_checked {
        let raw = &auth.raw;
        if raw.len() < MIC_AT + 16 {
            return Err(NtlmError::Malformed("MIC announced but missing"));
        }
        let mut zeroed = raw.clone();
        zeroed[MIC_AT..MIC_AT + 16].fill(0);
        let mic = hmac_md5(&session_key, &[negotiate, challenge, &zeroed]);
        if !same_bytes(&mic, &raw[MIC_AT..MIC_AT + 16]) {
            return Err(NtlmError::BadMic);
        }
    }
    Ok(Verified { session_key, mic_checked })
}

#[cfg(test)]
#[allow(dead_code)]
#[path = "../tests/common/ntlm.rs"]
mod client;

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    // [MS-NLMP] 4.2.1 common values and 4.2.4 (NTLMv2 authentication).
    const SERVER_CHALLENGE: [u8; 8] = [0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef];
    /// 4.2.4: the Challenge Flags of the NTLMv2 examples.
    const SPEC_CHALLENGE_FLAGS: u32 = 0xe28a_8233;

    /// 4.2.4: AV pair 1 NetBIOS domain name "Domain", AV pair 2 NetBIOS server name "Server".
    fn spec_target_info() -> Vec<u8> {
        let mut t = Vec::new();
        push_av(&mut t, av::NB_DOMAIN_NAME, &utf16le("Domain"));
        push_av(&mut t, av::NB_COMPUTER_NAME, &utf16le("Server"));
        push_av(&mut t, av::EOL, &[]);
        t
    }

    /// 4.2.4.3: the CHALLENGE_MESSAGE of the NTLMv2 example.
    fn spec_challenge_message() -> Vec<u8> {
        hex("4e544c4d53535000 02000000 0c000c00 38000000 33828ae2 0123456789abcdef 0000000000000000
             24002400 44000000 06007017 0000000f 530065007200760065007200
             02000c00 44006f006d00610069006e00 01000c00 530065007200760065007200 00000000")
    }

    /// 4.2.4.3: the AUTHENTICATE_MESSAGE of the NTLMv2 example (no MIC).
    fn spec_authenticate_message() -> Vec<u8> {
        hex("4e544c4d53535000 03000000 18001800 6c000000 54005400 84000000 0c000c00 48000000
             08000800 54000000 10001000 5c000000 10001000 d8000000 358288e2 0501280a 0000000f
             44006f006d00610069006e00 5500730065007200 43004f004d0050005500540045005200
             86c35097ac9cec102554764a57cccc19aaaaaaaaaaaaaaaa
             68cd0ab851e51c96aabc927bebef6a1c 0101000000000000 0000000000000000 aaaaaaaaaaaaaaaa 00000000
             02000c00 44006f006d00610069006e00 01000c00 530065007200760065007200 00000000 00000000
             c5dad2544fc9799094ce1ce90bc9d03e")
    }

    #[test]
    fn ntowfv2_is_the_spec_response_key() {
        // 4.2.4.1.1: ResponseKeyNT.
        assert_eq!(ntowfv2("Password", "User", "Domain").to_vec(), hex("0c868a403bfd7a93a3001ef22ef02e3f"));
        // 4.2.2.1.2 (NTOWFv1): the NT hash of "Password".
        assert_eq!(nt_hash("Password").to_vec(), hex("a4f49c406510bdcab6824ee7c30fd852"));
        // Only the user name is upper-cased.
        assert_eq!(ntowfv2("Password", "user", "Domain"), ntowfv2("Password", "USER", "Domain"));
        assert_ne!(ntowfv2("Password", "User", "DOMAIN"), ntowfv2("Password", "User", "Domain"));
    }

    #[test]
    fn ntproofstr_and_session_base_key_are_the_spec_ones() {
        let key = ntowfv2("Password", "User", "Domain");
        let mut temp = hex("0101000000000000 0000000000000000 aaaaaaaaaaaaaaaa 00000000");
        temp.extend(spec_target_info());
        temp.extend([0; 4]);
        let proof = hmac_md5(&key, &[&SERVER_CHALLENGE, &temp]);
        // 4.2.4.2.2: NTLMv2 Response (NTProofStr).
        assert_eq!(proof.to_vec(), hex("68cd0ab851e51c96aabc927bebef6a1c"));
        // 4.2.4.1.2: SessionBaseKey.
        assert_eq!(hmac_md5(&key, &[&proof]).to_vec(), hex("8de40ccadbc14a82f15cb0ad0de95ca3"));
        // 4.2.4.2.1: LMv2 Response.
        let lm = hmac_md5(&key, &[&SERVER_CHALLENGE, &[0xaa; 8]]);
        assert_eq!(lm.to_vec(), hex("86c35097ac9cec102554764a57cccc19"));
    }

    #[test]
    fn the_challenge_message_is_built_as_the_spec_shows() {
        let ti = spec_target_info();
        let m = build_challenge(&Challenge {
            flags: SPEC_CHALLENGE_FLAGS,
            server_challenge: SERVER_CHALLENGE,
            target_name: "Server",
            target_info: &ti,
            version: [0x06, 0x00, 0x70, 0x17, 0, 0, 0, 0x0f],
        });
        assert_eq!(m, spec_challenge_message());
    }

    #[test]
    fn the_spec_authenticate_message_verifies_with_the_password_only() {
        let a = parse_authenticate(&spec_authenticate_message()).unwrap();
        assert_eq!((a.user.as_str(), a.domain.as_str(), a.workstation.as_str()), ("User", "Domain", "COMPUTER"));
        assert_eq!(a.flags, 0xe288_8235);
        assert_eq!(a.lm_response, hex("86c35097ac9cec102554764a57cccc19aaaaaaaaaaaaaaaa"));
        assert_eq!(a.nt_response.len(), 84);
        let ok = verify(&a, "Password", &SERVER_CHALLENGE, &[], &spec_challenge_message()).unwrap();
        // 4.2.1: RandomSessionKey, recovered through the key exchange (4.2.4.2.3).
        assert_eq!(ok.session_key, [0x55; 16]);
        assert!(!ok.mic_checked);
        assert_eq!(verify(&a, "password", &SERVER_CHALLENGE, &[], &[]), Err(NtlmError::WrongResponse));
        let other_challenge = [0u8; 8];
        assert_eq!(verify(&a, "Password", &other_challenge, &[], &[]), Err(NtlmError::WrongResponse));
    }

    #[test]
    fn rc4_matches_rfc_6229() {
        // RFC 6229, 40-bit key 0x0102030405, keystream offset 0.
        assert_eq!(rc4(&[1, 2, 3, 4, 5], &[0; 8]), hex("b2396305f03dc027"));
    }

    #[test]
    fn challenge_flags_echo_what_the_client_asks() {
        use flags::*;
        let client =
            UNICODE | OEM | REQUEST_TARGET | SIGN | NTLM | ALWAYS_SIGN | EXTENDED_SESSIONSECURITY | VERSION | KEY_EXCH;
        let f = challenge_flags(client);
        for want in [UNICODE, NTLM, TARGET_INFO, TARGET_TYPE_DOMAIN, EXTENDED_SESSIONSECURITY, VERSION, KEY_EXCH, SIGN]
        {
            assert_ne!(f & want, 0, "{want:#x}");
        }
        // Never LM_KEY (0x80), nor what the client did not ask for.
        assert_eq!(f & (OEM | SEAL | 0x80 | NEGOTIATE_56), 0);
        let oem = challenge_flags(OEM | NTLM);
        assert_eq!((oem & OEM, oem & UNICODE), (OEM, 0));
    }

    #[test]
    fn target_info_carries_the_names_and_a_timestamp() {
        let names = ServerNames {
            nb_domain: "CONTOSO",
            nb_computer: "EXCH01",
            dns_domain: "contoso.test",
            dns_computer: "exch01.contoso.test",
        };
        let ti = target_info(&names, filetime(0));
        let pairs = av_pairs(&ti).unwrap();
        let ids: Vec<u16> = pairs.iter().map(|p| p.0).collect();
        assert_eq!(
            ids,
            [av::NB_DOMAIN_NAME, av::NB_COMPUTER_NAME, av::DNS_DOMAIN_NAME, av::DNS_COMPUTER_NAME, av::TIMESTAMP]
        );
        assert_eq!(pairs[0].1, utf16le("CONTOSO"));
        // 1970-01-01 as a FILETIME.
        assert_eq!(pairs[4].1, 116_444_736_000_000_000u64.to_le_bytes());
        assert!(ti.ends_with(&[0, 0, 0, 0]));
    }

    /// A full exchange with the test client (its own NTLM code, in tests/common/ntlm.rs): the MIC
    /// is checked, and any change to the messages breaks it.
    #[test]
    fn a_client_exchange_with_mic_verifies_and_tampering_is_caught() {
        let negotiate = client::negotiate_message();
        let n = parse_negotiate(&negotiate).unwrap();
        let names =
            ServerNames { nb_domain: "CONTOSO", nb_computer: "EXCH", dns_domain: "c.test", dns_computer: "e.c.test" };
        let ti = target_info(&names, filetime(1_750_000_000_000));
        let sc = [7u8; 8];
        let challenge = build_challenge(&Challenge {
            flags: challenge_flags(n.flags),
            server_challenge: sc,
            target_name: "CONTOSO",
            target_info: &ti,
            version: [10, 0, 0x63, 0x45, 0, 0, 0, 0x0f],
        });
        let creds = client::Credentials { user: "robot", domain: "CONTOSO", password: "Passw0rd!" };
        let msg = client::authenticate_message(&negotiate, &challenge, &creds);
        let a = parse_authenticate(&msg).unwrap();
        assert_eq!((a.user.as_str(), a.domain.as_str()), ("robot", "CONTOSO"));
        let ok = verify(&a, "Passw0rd!", &sc, &negotiate, &challenge).unwrap();
        assert!(ok.mic_checked);
        assert_eq!(verify(&a, "wrong", &sc, &negotiate, &challenge), Err(NtlmError::WrongResponse));
        // The MIC covers the NEGOTIATE message: a changed flag there is noticed.
        let mut other = negotiate.clone();
        other[12] ^= 0x10;
        assert_eq!(verify(&a, "Passw0rd!", &sc, &other, &challenge), Err(NtlmError::BadMic));
        // A flipped MIC byte.
        let mut bad = msg.clone();
        bad[MIC_AT] ^= 1;
        let a = parse_authenticate(&bad).unwrap();
        assert_eq!(verify(&a, "Passw0rd!", &sc, &negotiate, &challenge), Err(NtlmError::BadMic));
    }

    #[test]
    fn ntlmv1_lm_only_and_anonymous_are_refused() {
        let v1 = client::v1_authenticate_message("robot", "CONTOSO");
        let a = parse_authenticate(&v1).unwrap();
        assert_eq!(a.nt_response.len(), 24);
        assert_eq!(verify(&a, "Passw0rd!", &[0; 8], &[], &[]), Err(NtlmError::NotV2));
        let lm_only = Authenticate { nt_response: vec![], ..a.clone() };
        assert_eq!(verify(&lm_only, "Passw0rd!", &[0; 8], &[], &[]), Err(NtlmError::NotV2));
        let anonymous = Authenticate { user: String::new(), nt_response: vec![], lm_response: vec![0], ..a };
        assert_eq!(verify(&anonymous, "", &[0; 8], &[], &[]), Err(NtlmError::Anonymous));
    }

    #[test]
    fn malformed_messages_are_errors_not_panics() {
        assert!(message_type(b"NTLMSSP").is_err());
        assert!(message_type(b"HTTP/1.1 200 OK").is_err());
        assert_eq!(
            parse_authenticate(&client::negotiate_message()),
            Err(NtlmError::UnexpectedType { found: 1, expected: 3 })
        );
        let mut m = spec_authenticate_message();
        // NtChallengeResponse pointing past the end.
        m[24] = 0xff;
        assert!(parse_authenticate(&m).is_err());
        let mut short = spec_authenticate_message();
        short.truncate(70);
        assert!(parse_authenticate(&short).is_err());
        assert!(av_pairs(&[2, 0, 9, 0, 1]).is_err());
        for n in 0..spec_authenticate_message().len() {
            let _ = parse_authenticate(&spec_authenticate_message()[..n]);
        }
    }
}
