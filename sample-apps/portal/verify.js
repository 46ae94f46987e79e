// Verification in the browser, with WebCrypto only: MAA tokens (RS256, keys from the issuer's
// /certs x5c certificates), and Countersign receipts (docs/protocol.md sections 8 and 9:
// ECDSA P-256 chain entries and the answering hop's countersignature).
// No dependencies; every failure says which check failed.

const te = new TextEncoder();
const td = new TextDecoder("utf-8", { fatal: true });
const SKEW_MS = 60_000;

export function b64urlToBytes(s) {
  if (typeof s !== "string" || !/^[A-Za-z0-9_-]*$/.test(s)) throw new Error("not base64url");
  let b = s.replace(/-/g, "+").replace(/_/g, "/");
  while (b.length % 4) b += "=";
  const out = b64ToBytes(b);
  // Canonical only (docs/protocol.md): the unused bits of the last character are zero, so that
  // one byte string has one encoding.
  if (bytesToB64url(out) !== s) throw new Error("not canonical base64url");
  return out;
}

// exactMembers checks that o is an object with exactly the members names (docs/protocol.md:
// spelled exactly, each once; JSON.parse keeps the last of a repeated member, whose statement
// then fails its signature or digest).
function exactMembers(o, names, what) {
  if (o === null || typeof o !== "object" || Array.isArray(o)) throw new Error(`${what} is not a JSON object`);
  const got = Object.keys(o);
  const extra = got.filter((k) => !names.includes(k));
  const missing = names.filter((k) => !got.includes(k));
  if (extra.length || missing.length) throw new Error(`${what} must have exactly the members ${names.join(", ")}${extra.length ? `; unexpected ${extra.join(", ")}` : ""}${missing.length ? `; missing ${missing.join(", ")}` : ""}`);
}

// P-256's order n and n/2: a signature's s must be at most n/2 (low-s).
const P256_HALF_N = 0x7fffffff800000007fffffffffffffffde737d56d38bcf4279dce5617e3192a8n;

function isLowS(sig) {
  let s = 0n;
  for (let i = 32; i < 64; i++) s = (s << 8n) | BigInt(sig[i]);
  return s <= P256_HALF_N;
}

export function b64ToBytes(s) {
  const bin = atob(s);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

export function bytesToB64url(b) {
  let s = "";
  for (const x of b) s += String.fromCharCode(x);
  return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

export async function sha256(bytes) {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
}

// digest is b64url(SHA-256(ASCII of s)), how the protocol names tokens and entries.
export async function digest(s) {
  return bytesToB64url(await sha256(te.encode(s)));
}

// --- A minimal DER walker: enough to find a certificate's SubjectPublicKeyInfo. ---

function tlv(buf, off) {
  if (off + 2 > buf.length) throw new Error("DER: truncated");
  const tag = buf[off];
  let len = buf[off + 1];
  let hdr = 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    if (n === 0 || n > 4) throw new Error("DER: unsupported length");
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + buf[off + 2 + i];
    hdr += n;
  }
  const end = off + hdr + len;
  if (end > buf.length) throw new Error("DER: length beyond the buffer");
  return { tag, start: off + hdr, end, off };
}

// spkiFromCertificate returns the DER of the SubjectPublicKeyInfo of an X.509 certificate.
export function spkiFromCertificate(der) {
  const cert = tlv(der, 0);
  if (cert.tag !== 0x30) throw new Error("certificate is not a SEQUENCE");
  const tbs = tlv(der, cert.start);
  if (tbs.tag !== 0x30) throw new Error("tbsCertificate is not a SEQUENCE");
  let p = tbs.start;
  let field = tlv(der, p);
  if (field.tag === 0xa0) { p = field.end; field = tlv(der, p); } // [0] version
  // serialNumber, signature, issuer, validity, subject, then subjectPublicKeyInfo.
  for (let i = 0; i < 5; i++) { p = field.end; field = tlv(der, p); }
  if (field.tag !== 0x30) throw new Error("subjectPublicKeyInfo is not a SEQUENCE");
  return der.slice(field.off, field.end);
}

// --- Issuer keys ---

// loadIssuerKeys fetches {certsURL} (MAA's JWKS with x5c) and imports every RSA key.
export async function loadIssuerKeys(certsURL) {
  const resp = await fetch(certsURL, { cache: "no-store" });
  if (!resp.ok) throw new Error(`${certsURL} answered ${resp.status}`);
  const jwks = await resp.json();
  const keys = new Map();
  for (const k of jwks.keys || []) {
    if (!k.kid || !Array.isArray(k.x5c) || k.x5c.length === 0) continue;
    try {
      const spki = spkiFromCertificate(b64ToBytes(k.x5c[0]));
      const key = await crypto.subtle.importKey("spki", spki, { name: "RSASSA-PKCS1-v1_5", hash: "SHA-256" }, false, ["verify"]);
      keys.set(k.kid, key);
    } catch (e) {
      // A key that does not import is not used; verification with its kid then fails.
    }
  }
  if (keys.size === 0) throw new Error(`${certsURL} has no usable RS256 key`);
  return keys;
}

// Verifier holds the pinned issuers and their keys.
export class Verifier {
  // issuers: [{url, certsURL}] pinned by the portal's configuration.
  constructor(issuers, identities) {
    this.issuers = issuers || [];
    this.identities = identities || {};
    this.keys = new Map(); // issuer url -> Promise<Map kid -> CryptoKey>
  }

  keysFor(iss) {
    const pinned = this.issuers.find((i) => i.url === iss);
    if (!pinned) return null;
    if (!this.keys.has(iss)) {
      const p = loadIssuerKeys(pinned.certsURL || iss + "/certs");
      p.catch(() => this.keys.delete(iss)); // retry on the next verification
      this.keys.set(iss, p);
    }
    return this.keys.get(iss);
  }

  // verifyToken checks an MAA token at time `at` (ms): compact JWS, alg RS256, kid, pinned
  // iss, signature, exp/nbf/iat. It resolves to {ok, reason, claims}.
  async verifyToken(jwt, at = Date.now()) {
    const fail = (reason, claims) => ({ ok: false, reason, claims });
    if (typeof jwt !== "string" || jwt.length > 65536) return fail("token missing or larger than 64 KiB");
    const parts = jwt.split(".");
    if (parts.length !== 3 || parts.some((p) => p === "")) return fail("not a compact JWS");
    let header, claims;
    try {
      header = JSON.parse(td.decode(b64urlToBytes(parts[0])));
      claims = JSON.parse(td.decode(b64urlToBytes(parts[1])));
    } catch (e) {
      return fail("header or payload is not base64url JSON");
    }
    if (header.alg !== "RS256") return fail(`alg is ${JSON.stringify(header.alg)}, expected RS256`, claims);
    if (header.crit !== undefined) return fail("crit is not supported", claims);
    if (typeof header.kid !== "string") return fail("kid missing", claims);
    const keysP = this.keysFor(claims.iss);
    if (!keysP) return fail(`issuer ${JSON.stringify(claims.iss)} is not one the portal trusts (${this.issuers.map((i) => i.url).join(", ")})`, claims);
    let keys;
    try {
      keys = await keysP;
    } catch (e) {
      return fail(`cannot fetch the issuer's keys: ${e.message}`, claims);
    }
    const key = keys.get(header.kid);
    if (!key) return fail(`kid ${header.kid} is not in the issuer's key set`, claims);
    const ok = await crypto.subtle.verify("RSASSA-PKCS1-v1_5", key, b64urlToBytes(parts[2]), te.encode(parts[0] + "." + parts[1]));
    if (!ok) return fail("the signature does not verify under the issuer's key", claims);
    for (const c of ["exp", "nbf", "iat"]) {
      if (typeof claims[c] !== "number") return fail(`claim ${c} missing`, claims);
    }
    if (at >= claims.exp * 1000 + SKEW_MS) return fail(`expired at ${new Date(claims.exp * 1000).toISOString()}`, claims);
    if (claims.nbf * 1000 > at + SKEW_MS) return fail(`not valid before ${new Date(claims.nbf * 1000).toISOString()}`, claims);
    if (claims.iat * 1000 > at + SKEW_MS) return fail("issued in the future", claims);
    const id = this.identify(claims);
    if (Object.keys(this.identities).length > 0 && !id) return fail(`MRENCLAVE ${claims["x-ms-sgx-mrenclave"]} matches no identity the portal expects`, claims);
    return { ok: true, reason: "", claims, identity: id };
  }

  // identify names the configured identity whose measurements the claims carry.
  identify(claims) {
    for (const [name, id] of Object.entries(this.identities)) {
      const mre = id.mrenclave || [];
      const mrs = id.mrsigner || [];
      if ((mre.length && mre.includes(claims["x-ms-sgx-mrenclave"])) || (mrs.length && mrs.includes(claims["x-ms-sgx-mrsigner"]))) return name;
    }
    return "";
  }
}

// runtimeKeys returns the EC P-256 keys a token's runtime data names, imported for ECDSA.
async function runtimeKeys(claims) {
  const out = [];
  const keys = (claims["x-ms-runtime"] && claims["x-ms-runtime"].keys) || [];
  for (const k of keys) {
    if (k.kty !== "EC" || k.crv !== "P-256") continue;
    try {
      out.push(await crypto.subtle.importKey("jwk", { kty: "EC", crv: "P-256", x: k.x, y: k.y, ext: true }, { name: "ECDSA", namedCurve: "P-256" }, false, ["verify"]));
    } catch (e) { /* not a usable key */ }
  }
  return out;
}

// parseSigned reads a statement: v1 is payload.signature, v2 (docs/protocol.md section 10)
// payload.signature.proof; the payload's v must match the number of parts.
function parseSigned(enc) {
  const parts = enc.split(".");
  if ((parts.length !== 2 && parts.length !== 3) || parts[0] === "") throw new Error("expected base64url(payload).base64url(signature) (v1) or base64url(payload).base64url(signature).base64url(proof) (v2)");
  const p = parts[0];
  const sig = b64urlToBytes(parts[1]);
  if (sig.length !== 64) throw new Error("signature is not 64 bytes");
  if (!isLowS(sig)) throw new Error("signature is not low-s");
  const payload = JSON.parse(td.decode(b64urlToBytes(p)));
  const members = "entry" in payload ? ["v", "entry", "tok", "resp", "ts"] : ["v", "i", "prev", "tok", "req", "ts", "nonce"];
  exactMembers(payload, members, "the statement");
  let proof = null;
  if (parts.length === 3) {
    const b = b64urlToBytes(parts[2]);
    if (b.length < 2 || (b.length - 2) % 32 !== 0) throw new Error("inclusion proof is not 2 + 32*k bytes");
    proof = { index: b[0], size: b[1], path: [] };
    if (proof.size < 1 || proof.size > 16 || proof.index >= proof.size) throw new Error("inclusion proof outside a batch of 1 to 16");
    for (let o = 2; o < b.length; o += 32) proof.path.push(b.slice(o, o + 32));
  }
  if (payload.v !== (proof ? 2 : 1)) throw new Error(`version ${payload.v} in a ${parts.length}-part encoding`);
  return { p, sig, proof, payload };
}

function concat(...arrays) {
  const out = new Uint8Array(arrays.reduce((n, a) => n + a.length, 0));
  let o = 0;
  for (const a of arrays) { out.set(a, o); o += a.length; }
  return out;
}

// batchRoot recomputes a v2 batch's root from the leaf and the proof (RFC 9162 2.1.3.2).
async function batchRoot(leaf, proof) {
  let fn = proof.index, sn = proof.size - 1, r = leaf;
  for (const p of proof.path) {
    if (sn === 0) return null;
    if ((fn & 1) === 1 || fn === sn) {
      r = await sha256(concat(new Uint8Array([1]), p, r));
      while ((fn & 1) === 0 && fn !== 0) { fn >>= 1; sn >>= 1; }
    } else {
      r = await sha256(concat(new Uint8Array([1]), r, p));
    }
    fn >>= 1; sn >>= 1;
  }
  return sn === 0 ? r : null;
}

// signedBy checks a statement of kind ("chain-entry" or "countersignature") under one of keys.
async function signedBy(keys, kind, st) {
  let msg;
  if (!st.proof) {
    msg = te.encode(`countersign/${kind}/v1.` + st.p);
  } else {
    const leaf = await sha256(concat(new Uint8Array([0]), te.encode(`countersign/${kind}/v2.` + st.p)));
    const root = await batchRoot(leaf, st.proof);
    if (!root) return false;
    msg = te.encode("countersign/batch-root/v2." + bytesToB64url(root));
  }
  for (const k of keys) {
    if (await crypto.subtle.verify({ name: "ECDSA", hash: "SHA-256" }, k, st.sig, msg)) return true;
  }
  return false;
}

// hopInfo is what the page shows of a verified token.
export function hopInfo(claims, identity) {
  return {
    identity: identity || "",
    mrenclave: claims["x-ms-sgx-mrenclave"] || "",
    mrsigner: claims["x-ms-sgx-mrsigner"] || "",
    debug: claims["x-ms-sgx-is-debuggable"] === true,
    simulated: claims["x-countersign-sim"] === true,
    claimed: (claims["x-ms-runtime"] && claims["x-ms-runtime"].claimed) || {},
  };
}

// verifyReceipt checks a Countersign receipt (the header form, base64url JSON, or JSON) and,
// when responseBody is given, that the receipt covers exactly those bytes. It resolves to
// {ok, reason, hops: [...], answerer, at}.
export async function verifyReceipt(verifier, receipt, responseBody) {
  const res = { ok: false, reason: "", hops: [], answerer: null, at: null };
  const fail = (reason) => Object.assign(res, { ok: false, reason });
  let r;
  try {
    const s = receipt.trim();
    r = JSON.parse(s.startsWith("{") ? s : td.decode(b64urlToBytes(s)));
  } catch (e) {
    return fail("the receipt is not JSON or base64url JSON");
  }
  const base = ["v", "chain", "tokens", "countersignature", "status", "bodySha256"];
  try {
    exactMembers(r, r && r.v === 2 ? base.concat(["trailersSha256", "requestBody"]) : base, "the receipt");
  } catch (e) {
    return fail(e.message);
  }
  if (!Number.isInteger(r.status) || r.status < 100 || r.status > 999) return fail("the receipt's status is not an HTTP status code");
  if ((r.v !== 1 && r.v !== 2) || typeof r.chain !== "string" || !Array.isArray(r.tokens) || typeof r.countersignature !== "string") return fail("the receipt is not a version 1 or 2 receipt");
  // v2: a streamed exchange's receipt (docs/protocol.md section 11), with the trailers' and the
  // request body's digests; v1 has neither member.
  const streamMembers = ["trailersSha256", "requestBody"];
  if (r.v === 1 && streamMembers.some((k) => k in r)) return fail("a version 1 receipt with a version 2 member");
  if (r.v === 2 && !streamMembers.every((k) => typeof r[k] === "string")) return fail("a version 2 receipt without trailersSha256 and requestBody");
  const tokens = new Map();
  for (const t of r.tokens) {
    const d = await digest(t);
    if (tokens.has(d)) return fail("the receipt lists a token twice");
    tokens.set(d, t);
  }
  let cs;
  try {
    cs = parseSigned(r.countersignature);
  } catch (e) {
    return fail(`countersignature: ${e.message}`);
  }
  const c = cs.payload;
  if (typeof c.ts !== "number") return fail("countersignature: no timestamp");
  const at = c.ts;
  res.at = new Date(at);
  const used = new Set([c.tok]);
  const entries = r.chain.split(",").map((e) => e.trim());
  if (entries.length > 32) return fail("the chain has more than 32 entries");
  let prevTS = 0;
  for (let i = 0; i < entries.length; i++) {
    let e;
    try {
      e = parseSigned(entries[i]);
    } catch (err) {
      return fail(`chain entry ${i}: ${err.message}`);
    }
    const E = e.payload;
    if (E.i !== i) return fail(`chain entry ${i}: index ${E.i}, expected ${i}`);
    const wantPrev = i === 0 ? "" : await digest(entries[i - 1]);
    if (E.prev !== wantPrev) return fail(`chain entry ${i}: does not link to the entry before it`);
    if (E.ts < prevTS) return fail(`chain entry ${i} is older than entry ${i - 1}`);
    if (E.ts > at + SKEW_MS) return fail(`chain entry ${i} is later than the countersignature`);
    prevTS = E.ts;
    const raw = tokens.get(E.tok);
    if (!raw) return fail(`chain entry ${i} names a token the receipt does not carry`);
    used.add(E.tok);
    const tv = await verifier.verifyToken(raw, at);
    if (!tv.ok) return fail(`chain entry ${i}: token rejected: ${tv.reason}`);
    if (!(await signedBy(await runtimeKeys(tv.claims), "chain-entry", e))) return fail(`chain entry ${i} is not signed by a key its token names`);
    res.hops.push(Object.assign(hopInfo(tv.claims, tv.identity), { ts: new Date(E.ts) }));
  }
  for (const d of tokens.keys()) if (!used.has(d)) return fail("the receipt carries a token nothing names");
  if (c.entry !== (await digest(entries[entries.length - 1]))) return fail("the countersignature does not answer the chain's last entry");
  if (c.ts < prevTS) return fail("the countersignature is older than the request entry");
  const bodySum = (() => { try { return b64urlToBytes(r.bodySha256); } catch (e) { return null; } })();
  if (!bodySum || bodySum.length !== 32) return fail("bodySha256 is not a base64url SHA-256");
  const respDigest = bytesToB64url(await sha256(te.encode(r.v === 2
    ? `countersign/response-stream/v1\n${r.status}\n${r.bodySha256}\n${r.trailersSha256}\n${r.requestBody}`
    : `countersign/response/v1\n${r.status}\n${r.bodySha256}`)));
  if (c.resp !== respDigest) return fail("the countersignature does not cover this response (status and body digest)");
  const ans = tokens.get(c.tok);
  if (!ans) return fail("the countersignature names a token the receipt does not carry");
  const av = await verifier.verifyToken(ans, at);
  if (!av.ok) return fail(`answering hop's token rejected: ${av.reason}`);
  if (!(await signedBy(await runtimeKeys(av.claims), "countersignature", cs))) return fail("the countersignature is not signed by a key the answering hop's token names");
  res.answerer = Object.assign(hopInfo(av.claims, av.identity), { ts: new Date(at) });
  if (responseBody !== undefined) {
    const got = bytesToB64url(await sha256(typeof responseBody === "string" ? te.encode(responseBody) : responseBody));
    if (got !== r.bodySha256) return fail("the stored response is not the one the receipt covers (its SHA-256 differs)");
  }
  res.ok = true;
  return res;
}

// verifyAttestation checks the document from a sidecar's /.well-known/attestation: the token,
// and that its runtime data names the key the document presents.
export async function verifyAttestation(verifier, doc) {
  const tv = await verifier.verifyToken(doc.token);
  if (!tv.ok) return tv;
  const keys = (tv.claims["x-ms-runtime"] && tv.claims["x-ms-runtime"].keys) || [];
  const k = doc.key || {};
  if (!keys.some((x) => x.kty === k.kty && x.crv === k.crv && x.x === k.x && x.y === k.y)) {
    return { ok: false, reason: "the token's runtime data does not name the key the document presents", claims: tv.claims };
  }
  return tv;
}
