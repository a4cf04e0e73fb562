//! The kinds of event a rule can read.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Where an event comes from. A rule names one source; the field registry says which sources
/// provide each field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// Kernel events from the node enforcer (Falco's `syscall` source).
    Syscall,
    /// Kubernetes audit events from the audit bridge (Falco's `k8s_audit` source).
    K8sAudit,
    /// AdmissionReviews from the webhook, presented as audit-shaped events.
    K8sAdmission,
}

impl Source {
    /// Every source, in a stable order.
    pub const ALL: [Source; 3] = [Source::Syscall, Source::K8sAudit, Source::K8sAdmission];

    /// The name used in rules files and on the wire.
    pub const fn as_str(self) -> &'static str {
        match self {
            Source::Syscall => "syscall",
            Source::K8sAudit => "k8s_audit",
            Source::K8sAdmission => "k8s_admission",
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The name is not one of `syscall`, `k8s_audit`, `k8s_admission`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown source \"{0}\": expected syscall, k8s_audit or k8s_admission")]
pub struct UnknownSource(pub String);

impl FromStr for Source {
    type Err = UnknownSource;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "syscall" => Ok(Source::Syscall),
            "k8s_audit" => Ok(Source::K8sAudit),
            "k8s_admission" => Ok(Source::K8sAdmission),
            other => Err(UnknownSource(other.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for s in Source::ALL {
            assert_eq!(s.as_str().parse::<Source>(), Ok(s));
        }
        assert!("aws_cloudtrail".parse::<Source>().is_err());
    }
}
