//! `tether certs generate|rotate`.

use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::{generate, rfc3339, rotate, CertError, Issued, Lifetimes, ServingNames};

/// Make and rotate the webhook's CA and serving certificate.
#[derive(Debug, Args)]
pub struct CertsArgs {
    #[command(subcommand)]
    pub command: CertsCommand,
}

#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Write a new CA (ca.crt, ca.key), a serving certificate signed by it (tls.crt,
    /// tls.key) and the CA bundle (ca-bundle.crt) into --out.
    Generate(GenerateArgs),
    /// Write a new serving certificate into --dir, and a new CA when the current one is
    /// near expiry; ca-bundle.crt then trusts the old and the new CA.
    Rotate(RotateArgs),
}

#[derive(Debug, Clone, Args)]
pub struct LifetimeArgs {
    /// Validity of a new CA, in days.
    #[arg(long, default_value_t = Lifetimes::default_const().ca_days)]
    pub ca_days: u32,
    /// Validity of a new serving certificate, in days (never beyond the CA's).
    #[arg(long, default_value_t = Lifetimes::default_const().serving_days)]
    pub serving_days: u32,
    /// Renew the CA when fewer than this many days of validity remain.
    #[arg(long, default_value_t = Lifetimes::default_const().ca_renew_before_days)]
    pub ca_renew_before_days: u32,
}

impl LifetimeArgs {
    fn lifetimes(&self) -> Lifetimes {
        Lifetimes {
            ca_days: self.ca_days,
            serving_days: self.serving_days,
            ca_renew_before_days: self.ca_renew_before_days,
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct GenerateArgs {
    /// DNS name of the serving certificate (repeatable), e.g. tether.tether-system.svc.
    #[arg(long = "dns", value_name = "NAME")]
    pub dns: Vec<String>,
    /// IP address of the serving certificate (repeatable).
    #[arg(long = "ip", value_name = "IP")]
    pub ip: Vec<IpAddr>,
    /// Directory to write into (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    #[command(flatten)]
    pub lifetimes: LifetimeArgs,
}

#[derive(Debug, Clone, Args)]
pub struct RotateArgs {
    /// Directory written by `tether certs generate`.
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// Replace the serving certificate's DNS names (default: keep the current ones).
    #[arg(long = "dns", value_name = "NAME")]
    pub dns: Vec<String>,
    /// Replace the serving certificate's IP addresses (default: keep the current ones).
    #[arg(long = "ip", value_name = "IP")]
    pub ip: Vec<IpAddr>,
    #[command(flatten)]
    pub lifetimes: LifetimeArgs,
}

fn summary(issued: &Issued) -> String {
    format!(
        "ca: {} (serial {}, valid until {}{})\nserving: {} (serial {}, valid until {}, names {})\nbundle: {} ({} CA{})\n",
        issued.paths.ca_cert.display(),
        issued.ca.serial,
        rfc3339(issued.ca.not_after),
        if issued.ca_renewed { ", new" } else { "" },
        issued.paths.tls_cert.display(),
        issued.serving.serial,
        rfc3339(issued.serving.not_after),
        issued
            .serving
            .dns_names
            .iter()
            .cloned()
            .chain(issued.serving.ip_addresses.iter().map(ToString::to_string))
            .collect::<Vec<_>>()
            .join(","),
        issued.paths.ca_bundle.display(),
        issued.bundle_len,
        if issued.bundle_len == 1 { "" } else { "s" },
    )
}

/// Runs `tether certs ...`, printing what was written to stdout.
pub fn run(args: &CertsArgs) -> Result<Issued, CertError> {
    let issued = match &args.command {
        CertsCommand::Generate(g) => generate(
            &ServingNames {
                dns: g.dns.clone(),
                ips: g.ip.clone(),
            },
            &g.lifetimes.lifetimes(),
            &g.out,
        )?,
        CertsCommand::Rotate(r) => {
            let names = (!r.dns.is_empty() || !r.ip.is_empty()).then(|| ServingNames {
                dns: r.dns.clone(),
                ips: r.ip.clone(),
            });
            rotate(&r.dir, names.as_ref(), &r.lifetimes.lifetimes())?
        }
    };
    let mut out = std::io::stdout().lock();
    out.write_all(summary(&issued).as_bytes())
        .map_err(|e| CertError::io("<stdout>", e))?;
    Ok(issued)
}
