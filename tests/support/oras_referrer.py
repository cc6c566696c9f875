"""Pushes an artifact with oras-py, then a second artifact whose subject is the first.

Usage: python oras_referrer.py HOST:PORT REPOSITORY WORKDIR
Prints the subject's digest and the referrer's digest, one per line.
"""
import hashlib, json, os, sys

import oras.client
import oras.oci

host, repository, work = sys.argv[1:4]
os.makedirs(work, exist_ok=True)
os.chdir(work)  # oras-py wants pushed paths under the working directory
open("model.bin", "wb").write(os.urandom(4096))
open("sbom.json", "w").write(json.dumps({"packages": ["model.bin"]}))
client = oras.client.OrasClient(hostname=host, insecure=True, tls_verify=False)
ref = "%s/%s" % (host, repository)
client.push(target=ref + ":v1", files=["model.bin"], quiet=True)
subject = oras.oci.Subject.from_manifest(client.get_manifest(ref + ":v1"))
client.push(target=ref + ":sbom", files=["sbom.json"], subject=subject, quiet=True)
sbom = client.get_manifest(ref + ":sbom")
print(subject.digest)
print("sha256:" + hashlib.sha256(json.dumps(sbom).encode()).hexdigest())
