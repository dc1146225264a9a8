//! A small NTLMv2 client ([MS-NLMP] 3.1.5) for the tests: a NEGOTIATE message, and the
//! AUTHENTICATE message for a server's CHALLENGE (NTLMv2 response, key exchange, and a MIC when
//! the challenge carries a timestamp, as Windows clients do). Written apart from the emulator's
//! server code (`src/ntlm.rs`), which also uses it in its unit tests, so the two check each other.

use hmac::{Hmac, Mac};
use md4::{Digest, Md4};

const UNICODE: u32 = 0x1;
const OEM: u32 = 0x2;
const REQUEST_TARGET: u32 = 0x4;
const SIGN: u32 = 0x10;
const NTLM: u32 = 0x200;
const ALWAYS_SIGN: u32 = 0x8000;
const EXTENDED_SESSIONSECURITY: u32 = 0x80000;
const VERSION: u32 = 0x0200_0000;
const NEGOTIATE_128: u32 = 0x2000_0000;
const KEY_EXCH: u32 = 0x4000_0000;
const NEGOTIATE_56: u32 = 0x8000_0000;

/// Who signs in.
pub struct Credentials<'a> {
    pub user: &'a str,
    pub domain: &'a str,
    pub password: &'a str,
}

fn le16(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(|u| u.to_le_bytes()).collect()
}

fn hmac_md5(key: &[u8], data: &[&[u8]]) -> [u8; 16] {
    let mut h = <Hmac<md5::Md5> as Mac>::new_from_slice(key).unwrap();
    for d in data {
        h.update(d);
    }
    h.finalize().into_bytes().into()
}

fn arc4(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut state = [0u8; 256];
    for (i, s) in state.iter_mut().enumerate() {
        *s = i as u8;
    }
    let mut j: usize = 0;
    for i in 0..256 {
        j = (j + state[i] as usize + key[i % key.len()] as usize) % 256;
        state.swap(i, j);
    }
    let (mut x, mut y) = (0usize, 0usize);
    let mut out = Vec::with_capacity(data.len());
    for b in data {
        x = (x + 1) % 256;
        y = (y + state[x] as usize) % 256;
        state.swap(x, y);
        out.push(b ^ state[(state[x] as usize + state[y] as usize) % 256]);
    }
    out
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn le_u16(b: &[u8], at: usize) -> usize {
    u16::from_le_bytes(b[at..at + 2].try_into().unwrap()) as usize
}

/// A NEGOTIATE_MESSAGE as a Windows client sends it (no domain or workstation supplied).
pub fn negotiate_message() -> Vec<u8> {
    let flags = UNICODE
        | OEM
        | REQUEST_TARGET
        | SIGN
        | NTLM
        | ALWAYS_SIGN
        | EXTENDED_SESSIONSECURITY
        | VERSION
        | NEGOTIATE_128
        | KEY_EXCH
        | NEGOTIATE_56;
    let mut m = b"NTLMSSP\0".to_vec();
    m.extend(1u32.to_le_bytes());
    m.extend(flags.to_le_bytes());
    m.extend([0u8; 16]);
    m.extend([10, 0, 0x61, 0x4a, 0, 0, 0, 0x0f]);
    m
}

/// Lays out an AUTHENTICATE_MESSAGE with an 88-byte header (room for the MIC).
fn authenticate_layout(flags: u32, parts: [&[u8]; 6]) -> Vec<u8> {
    let mut m = b"NTLMSSP\0".to_vec();
    m.extend(3u32.to_le_bytes());
    // Payload order in the header: LM, NT, domain, user, workstation, session key.
    // Payload order in the body: domain, user, workstation, LM, NT, session key (as Windows).
    let body_order = [2, 3, 4, 0, 1, 5];
    let mut offsets = [0usize; 6];
    let mut at = 88;
    for i in body_order {
        offsets[i] = at;
        at += parts[i].len();
    }
    for i in 0..6 {
        m.extend((parts[i].len() as u16).to_le_bytes());
        m.extend((parts[i].len() as u16).to_le_bytes());
        m.extend((offsets[i] as u32).to_le_bytes());
    }
    m.extend(flags.to_le_bytes());
    m.extend([10, 0, 0x61, 0x4a, 0, 0, 0, 0x0f]);
    m.extend([0u8; 16]);
    for i in body_order {
        m.extend_from_slice(parts[i]);
    }
    m
}

/// The AUTHENTICATE_MESSAGE for a CHALLENGE_MESSAGE: NTLMv2 with the server's TargetInfo echoed,
/// a random session key sent RC4-encrypted under key exchange, and the MIC over the three
/// messages when the challenge has a timestamp.
pub fn authenticate_message(negotiate: &[u8], challenge: &[u8], c: &Credentials<'_>) -> Vec<u8> {
    assert_eq!(&challenge[..8], b"NTLMSSP\0", "not a CHALLENGE_MESSAGE");
    assert_eq!(le_u32(challenge, 8), 2, "not a CHALLENGE_MESSAGE");
    let flags = le_u32(challenge, 20);
    let server_challenge = &challenge[24..32];
    let (ti_len, ti_off) = (le_u16(challenge, 40), le_u32(challenge, 44) as usize);
    let target_info = &challenge[ti_off..ti_off + ti_len];

    // The server's AV pairs without EOL, the timestamp it gave, then MsvAvFlags = MIC present.
    let mut pairs = Vec::new();
    let mut timestamp = None;
    let mut i = 0;
    loop {
        let (id, len) = (le_u16(target_info, i), le_u16(target_info, i + 2));
        if id == 0 {
            break;
        }
        if id == 7 {
            timestamp = Some(target_info[i + 4..i + 12].to_vec());
        }
        pairs.extend_from_slice(&target_info[i..i + 4 + len]);
        i += 4 + len;
    }
    let with_mic = timestamp.is_some();
    if with_mic {
        pairs.extend([6, 0, 4, 0, 2, 0, 0, 0]);
    }
    pairs.extend([0, 0, 0, 0]);

    let client_challenge: [u8; 8] = rand::random();
    let mut blob = vec![1, 1, 0, 0, 0, 0, 0, 0];
    blob.extend(timestamp.clone().unwrap_or_else(|| vec![0; 8]));
    blob.extend(client_challenge);
    blob.extend([0, 0, 0, 0]);
    blob.extend(pairs);
    blob.extend([0, 0, 0, 0]);

    let nt_hash: [u8; 16] = Md4::digest(le16(c.password)).into();
    let key = hmac_md5(&nt_hash, &[&le16(&(c.user.to_uppercase() + c.domain))]);
    let proof = hmac_md5(&key, &[server_challenge, &blob]);
    let mut nt = proof.to_vec();
    nt.extend(&blob);
    let lm = if with_mic {
        vec![0; 24]
    } else {
        let mut lm = hmac_md5(&key, &[server_challenge, &client_challenge]).to_vec();
        lm.extend(client_challenge);
        lm
    };
    let session_base_key = hmac_md5(&key, &[&proof]);
    let (exported, encrypted) = if flags & KEY_EXCH != 0 {
        let random: [u8; 16] = rand::random();
        (random, arc4(&session_base_key, &random))
    } else {
        (session_base_key, Vec::new())
    };
    let mut m = authenticate_layout(flags, [&lm, &nt, &le16(c.domain), &le16(c.user), &le16("ROBOT-PC"), &encrypted]);
    if with_mic {
        let mic = hmac_md5(&exported, &[negotiate, challenge, &m]);
        m[72..88].copy_from_slice(&mic);
    }
    m
}

/// An AUTHENTICATE_MESSAGE with NTLMv1-shaped (24-byte) responses, which servers configured for
/// NTLMv2 only refuse.
pub fn v1_authenticate_message(user: &str, domain: &str) -> Vec<u8> {
    let lm = [0x11u8; 24];
    let nt = [0x22u8; 24];
    authenticate_layout(UNICODE | NTLM, [&lm, &nt, &le16(domain), &le16(user), &le16("ROBOT-PC"), &[]])
}
