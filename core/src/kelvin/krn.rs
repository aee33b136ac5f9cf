//! Kelvin resource names, `krn:<ns>:<nss>`: the `resource` and `source` of a message. The SDK
//! splits at the first two colons (the rest may hold more) and checks the form of the namespaces
//! it knows; every other namespace is kept as it came.

use alloc::string::{String, ToString};
use core::fmt;

use super::Error;

/// A KRN: its namespace and the namespace-specific string.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Krn {
    pub ns: String,
    pub nss: String,
}

impl Krn {
    pub fn new(ns: impl Into<String>, nss: impl Into<String>) -> Self {
        Krn { ns: ns.into(), nss: nss.into() }
    }

    /// `krn:ad:<asset>/<datastream>`: an asset's data stream.
    pub fn asset_datastream(asset: &str, datastream: &str) -> Self {
        Krn { ns: "ad".to_string(), nss: alloc::format!("{asset}/{datastream}") }
    }

    /// Reads a KRN as the SDK's `KRN.from_string` does.
    pub fn parse(text: &str) -> Result<Self, Error> {
        let mut parts = text.splitn(3, ':');
        let (Some("krn"), Some(ns), Some(nss)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(Error::Krn);
        };
        if !form_holds(ns, nss) {
            return Err(Error::Krn);
        }
        Ok(Krn::new(ns, nss))
    }
}

/// The SDK's checks of the namespaces it knows (`kelvin.krn`): where it splits the string, the
/// separator must be there.
fn form_holds(ns: &str, nss: &str) -> bool {
    let has = |s: &str, c: char| s.contains(c);
    let pair = |s: &str, c: char, then: &dyn Fn(&str, &str) -> bool| s.split_once(c).is_some_and(|(a, b)| then(a, b));
    match ns {
        "am" | "ad" | "ap" | "wl" | "appversion" | "job" => has(nss, '/'),
        "wlappv" => pair(nss, ':', &|node_workload, app_version| has(node_workload, '/') && has(app_version, '/')),
        "rwlappv" => pair(nss, ':', &|_, rest| {
            pair(rest, ':', &|node_workload, app_version| has(node_workload, '/') && has(app_version, '/'))
        }),
        "dqasset" => has(nss, ':'),
        "dqad" => pair(nss, ':', &|_, datastream| has(datastream, '/')),
        _ => true,
    }
}

impl fmt::Display for Krn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "krn:{}:{}", self.ns, self.nss)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_namespaces_are_checked_and_the_rest_kept() {
        assert_eq!(Krn::parse("krn:ad:asset1/temp"), Ok(Krn::asset_datastream("asset1", "temp")));
        assert_eq!(Krn::parse("krn:zz:anything:here").unwrap().to_string(), "krn:zz:anything:here");
        assert_eq!(Krn::parse("krn:wlappv:n/w:app/1.0").unwrap().nss, "n/w:app/1.0");
        assert_eq!(Krn::parse("krn:rwlappv:r:n/w:app/1.0").unwrap().ns, "rwlappv");
        assert_eq!(Krn::parse("krn:asset:pump").unwrap().nss, "pump");
        for bad in
            ["krn:ad:noslash", "urn:ad:a/b", "krn:ad", "krn", "", "krn:wlappv:n/w", "krn:dqad:q:a", "krn:dqasset:q"]
        {
            assert_eq!(Krn::parse(bad), Err(Error::Krn), "{bad:?}");
        }
    }
}
