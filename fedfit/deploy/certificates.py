"""TLS certificates for the SuperLink and authentication keys for the SuperNodes (with ``cryptography``,
which Flower depends on anyway). Validity periods are in days.

Flower 1.41: ``flower-superlink`` takes ``--ssl-ca-certfile``, ``--ssl-certfile`` and ``--ssl-keyfile``.
Its SuperExec child connects back to ``127.0.0.1:PORT`` when it listens on 0.0.0.0, so the server
certificate always names localhost and 127.0.0.1 as well. SuperNode keys are EC keys on a NIST curve,
the private key in OpenSSH format (``--auth-supernode-private-key``), the public key in OpenSSH format
(``ecdsa-sha2-nistp384 ...``, registered with ``flwr supernode register KEY.pub CONN``).
"""
from __future__ import annotations

import datetime as _dt
import ipaddress
import re
from pathlib import Path
from typing import Iterable, Sequence

from fedfit.deploy.common import DeployError
from fedfit.deploy.files import write_private, write_public


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


def _name(cn: str):
    from cryptography.x509.oid import NameOID
    from cryptography import x509

    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fedfit"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def create_ca(directory: str | Path, common_name: str = "fedfit deployment CA", days: int = 3650) -> tuple[Path, Path]:
    """A self-signed CA: ``ca.crt`` (copy it to every machine) and ``ca.key`` (keep it on the operator's).
    Returns (crt, key)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    d = Path(directory)
    key = ec.generate_private_key(ec.SECP384R1())
    name = _name(common_name)
    now = _now()
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _dt.timedelta(minutes=5)).not_valid_after(now + _dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(ski, critical=False)
            .sign(key, hashes.SHA256()))
    crt = write_public(d / "ca.crt", cert.public_bytes(serialization.Encoding.PEM))
    k = write_private(d / "ca.key", key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                      serialization.NoEncryption()))
    return crt, k


def split_names(names: Iterable[str]) -> tuple[list[str], list[str]]:
    """Split host names into (DNS names, IP addresses), always including localhost and 127.0.0.1
    (the SuperLink's own SuperExec connects to 127.0.0.1), duplicates removed, order kept."""
    dns: list[str] = []
    ips: list[str] = []
    for n in ["localhost", "127.0.0.1", *names]:
        n = n.strip().strip("[]")
        if not n:
            continue
        try:
            ip = str(ipaddress.ip_address(n))
        except ValueError:
            if not re.fullmatch(r"[A-Za-z0-9*]([A-Za-z0-9.-]*[A-Za-z0-9])?", n):
                raise DeployError(f"not a DNS name or IP address: {n!r}") from None
            if n.lower() not in (x.lower() for x in dns):
                dns.append(n)
        else:
            if ip not in ips:
                ips.append(ip)
    return dns, ips


def create_server_cert(directory: str | Path, ca_crt: str | Path, ca_key: str | Path, names: Sequence[str] = (),
                       days: int = 825) -> tuple[Path, Path]:
    """``server.crt`` / ``server.key`` for the SuperLink, signed by the CA, valid for ``names`` (DNS names
    and IP addresses the SuperNodes and the operator use to reach it) plus localhost / 127.0.0.1.
    Returns (crt, key)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID

    d = Path(directory)
    ca_cert = x509.load_pem_x509_certificate(Path(ca_crt).read_bytes())
    ca_priv = serialization.load_pem_private_key(Path(ca_key).read_bytes(), password=None)
    dns, ips = split_names(names)
    key = ec.generate_private_key(ec.SECP384R1())
    now = _now()
    san = [x509.DNSName(n) for n in dns] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    primary = next((n for n in names if n.strip()), "localhost").strip("[]")
    cert = (x509.CertificateBuilder().subject_name(_name(primary)).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - _dt.timedelta(minutes=5)).not_valid_after(now + _dt.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName(san), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=False, key_agreement=True,
                                         key_cert_sign=False, crl_sign=False, content_commitment=False,
                                         data_encipherment=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_priv.public_key()), critical=False)
            .sign(ca_priv, hashes.SHA256()))
    crt = write_public(d / "server.crt", cert.public_bytes(serialization.Encoding.PEM))
    k = write_private(d / "server.key", key.private_bytes(serialization.Encoding.PEM,
                                                          serialization.PrivateFormat.TraditionalOpenSSL,
                                                          serialization.NoEncryption()))
    return crt, k


def certificate_names(crt: str | Path) -> tuple[list[str], list[str]]:
    """(DNS names, IP addresses) in a certificate's subject alternative names."""
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(Path(crt).read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return san.get_values_for_type(x509.DNSName), [str(i) for i in san.get_values_for_type(x509.IPAddress)]


def create_node_key(private_path: str | Path, comment: str = "") -> tuple[Path, Path]:
    """A SuperNode's authentication key pair: EC P-384, the private key in OpenSSH format (for
    ``--auth-supernode-private-key``) and ``<private>.pub`` in OpenSSH public format (for
    ``flwr supernode register``), like ``ssh-keygen -t ecdsa -b 384 -N ''``. Returns (private, public)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    priv = Path(private_path)
    key = ec.generate_private_key(ec.SECP384R1())
    write_private(priv, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                           serialization.NoEncryption()))
    pub = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    pub_path = write_public(priv.with_name(priv.name + ".pub"), pub + (f" {comment}".encode() if comment else b"") + b"\n")
    return priv, pub_path
