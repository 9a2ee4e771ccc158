//! Web Key Directory addresses (draft-koch-openpgp-webkey-service): the
//! local part lowercased, hashed with SHA-1 and written in z-base-32.

use super::https::Url;

/// z-base-32 (the alphabet WKD uses), without padding.
pub fn zbase32(data: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ybndrfg8ejkmcpqxot1uwisza345h769";
    let mut out = String::with_capacity(data.len().div_ceil(5) * 8);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for &b in data {
        buffer = (buffer << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((buffer >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// The advanced and the direct method's addresses for `email`; `None`
/// for an address without a domain.
pub fn urls(email: &str) -> Option<[Url; 2]> {
    let (local, domain) = email.rsplit_once('@')?;
    if local.is_empty() || domain.is_empty() {
        return None;
    }
    let domain = domain.to_ascii_lowercase();
    let hash = zbase32(&openssl::sha::sha1(local.to_ascii_lowercase().as_bytes()));
    let l = super::percent(local);
    let advanced = Url::parse(&format!(
        "https://openpgpkey.{domain}/.well-known/openpgpkey/{domain}/hu/{hash}?l={l}"
    ))
    .ok()?;
    let direct = Url::parse(&format!(
        "https://{domain}/.well-known/openpgpkey/hu/{hash}?l={l}"
    ))
    .ok()?;
    Some([advanced, direct])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_drafts_example_address_hashes_as_it_says() {
        // draft-koch-openpgp-webkey-service, section 3.1.
        let [advanced, direct] = urls("Joe.Doe@Example.ORG").unwrap();
        assert_eq!(
            advanced.to_string(),
            "https://openpgpkey.example.org/.well-known/openpgpkey/example.org/hu/iy9q119eutrkn8s1mk4r39qejnbu3n5q?l=Joe.Doe"
        );
        assert_eq!(
            direct.to_string(),
            "https://example.org/.well-known/openpgpkey/hu/iy9q119eutrkn8s1mk4r39qejnbu3n5q?l=Joe.Doe"
        );
        assert!(urls("no-domain").is_none());
        assert!(urls("x@bad domain").is_none());
    }

    #[test]
    fn z_base_32_encodes_partial_groups() {
        assert_eq!(zbase32(&[]), "");
        assert_eq!(zbase32(&[0]), "yy");
        assert_eq!(zbase32(&[0xff]), "9h");
        assert_eq!(zbase32(&[0xf0, 0xbf, 0xc7]), "6n9hq");
    }
}
