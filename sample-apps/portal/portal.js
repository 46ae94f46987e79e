// The hospital portal: patients, scans and diagnoses through the records API (same origin),
// the records API's attestation and every diagnosis receipt verified in the browser.
import { Verifier, verifyAttestation, verifyReceipt, hopInfo, b64ToBytes } from "./verify.js";

const $ = (id) => document.getElementById(id);
let verifier = null;
let current = null; // selected patient id

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c);
  return e;
}

function kv(dl, rows) {
  dl.replaceChildren();
  for (const [k, v] of rows) dl.append(el("dt", {}, k), el("dd", {}, v));
}

function short(hex) {
  return el("span", { class: "mono", title: hex }, hex ? hex.slice(0, 16) + "…" : "(none)");
}

async function api(method, path, body, headers = {}) {
  const resp = await fetch(path, { method, body, headers, cache: "no-store" });
  const data = await resp.json().catch(() => ({}));
  if (!resp.ok) {
    const fields = data.fields ? " " + Object.entries(data.fields).map(([k, v]) => `${k}: ${v}`).join("; ") : "";
    throw new Error((data.error || `HTTP ${resp.status}`) + (fields ? " —" + fields : ""));
  }
  return data;
}

// --- Attestation of the records API ---

function setStatus(node, state, text) {
  node.className = "badge " + (state === "verified" ? "ok" : state === "pending" ? "pending" : "bad");
  node.dataset.state = state;
  node.textContent = text;
}

async function checkAttestation(cfg) {
  const status = $("att-status");
  setStatus(status, "pending", "Checking the records API's attestation…");
  $("att-reason").hidden = true;
  $("att-sim").hidden = true;
  let doc;
  try {
    const resp = await fetch(cfg.attestationURL, { cache: "no-store" });
    if (!resp.ok) throw new Error(`${cfg.attestationURL} answered ${resp.status}`);
    doc = await resp.json();
  } catch (e) {
    setStatus(status, "not-verified", "Not verified: the attestation document could not be fetched");
    $("att-reason").textContent = e.message;
    $("att-reason").hidden = false;
    return;
  }
  const res = await verifyAttestation(verifier, doc);
  const c = res.claims || {};
  if (res.ok) {
    setStatus(status, "verified", c["x-countersign-sim"] ? "Verified (simulated enclave)" : "Verified");
  } else {
    setStatus(status, "not-verified", "Not verified");
    $("att-reason").textContent = res.reason;
    $("att-reason").hidden = false;
  }
  $("att-sim").hidden = c["x-countersign-sim"] !== true;
  const claimed = (c["x-ms-runtime"] && c["x-ms-runtime"].claimed) || {};
  kv($("att-details"), [
    ["Sidecar identity", doc.identity || "(unnamed)"],
    ["Issuer", c.iss || ""],
    ["Attestation type", c["x-ms-attestation-type"] || ""],
    ["MRENCLAVE", el("span", { class: "mono", "data-testid": "mrenclave" }, c["x-ms-sgx-mrenclave"] || "")],
    ["MRSIGNER", el("span", { class: "mono" }, c["x-ms-sgx-mrsigner"] || "")],
    ["Product ID / SVN", `${c["x-ms-sgx-product-id"] ?? "?"} / ${c["x-ms-sgx-svn"] ?? "?"}`],
    ["Debuggable", c["x-ms-sgx-is-debuggable"] ? "yes (not a production enclave)" : "no"],
    ["Expires", c.exp ? new Date(c.exp * 1000).toLocaleString() : ""],
    ["Claimed, not measured", Object.keys(claimed).length ? Object.entries(claimed).map(([k, v]) => `${k}=${v}`).join(", ") : "(none)"],
  ]);
}

// --- Patients ---

async function loadPatients() {
  const data = await api("GET", "/api/patients?limit=1000");
  const ul = $("patients");
  ul.replaceChildren();
  if (data.patients.length === 0) ul.append(el("li", {}, "No patients yet."));
  for (const p of data.patients) {
    ul.append(el("li", {}, el("button", { type: "button", class: "link", "data-patient": p.id, "aria-current": String(p.id === current), onclick: () => selectPatient(p.id) }, `${p.name} (${p.dateOfBirth})`)));
  }
}

async function selectPatient(id) {
  current = id;
  const p = await api("GET", `/api/patients/${id}`);
  $("patient").hidden = false;
  $("pt-title").textContent = `Patient: ${p.name}`;
  kv($("pt-details"), [["Date of birth", p.dateOfBirth], ["Sex", p.sex || "not recorded"], ["MRN", p.mrn || "(none)"], ["ID", el("span", { class: "mono" }, p.id)]]);
  document.querySelectorAll("#patients button").forEach((b) => b.setAttribute("aria-current", String(b.dataset.patient === id)));
  await loadRecords();
  $("pt-title").focus();
}

async function loadRecords() {
  const data = await api("GET", `/api/patients/${current}/records`);
  const ul = $("records");
  ul.replaceChildren();
  if (data.records.length === 0) ul.append(el("li", {}, "No records yet."));
  for (const r of data.records.slice().reverse()) ul.append(await renderRecord(r));
}

function hopItem(h, role) {
  const who = h.identity ? `${h.identity}` : "unnamed enclave";
  return el("li", {}, `${role}: ${who}, MRENCLAVE `, short(h.mrenclave), `, ${h.simulated ? "simulated" : h.debug ? "debuggable" : "production"}, at ${h.ts.toLocaleTimeString()}`);
}

async function renderRecord(r) {
  const li = el("li", { "data-record": r.id });
  li.append(el("strong", {}, r.title), ` · ${new Date(r.createdAt).toLocaleString()}`);
  if (r.kind !== "scan" || !r.diagnosis) {
    if (r.text) li.append(el("p", {}, r.text));
    return li;
  }
  const d = r.diagnosis;
  li.append(el("p", {}, "Diagnosis: ", el("strong", { "data-testid": "diagnosis" }, d.label), ` (model ${d.model} v${d.modelVersion})`));
  li.append(el("p", { class: "probs" }, d.probabilities.map((c) => `${c.label} ${(c.score * 100).toFixed(1)}%`).join(" · ")));
  const status = el("p", { class: "badge pending", role: "status", "data-testid": "receipt-status", "data-state": "pending" }, "Verifying the receipt…");
  li.append(status);
  if (!d.receipt) {
    setStatus(status, "not-verified", "Not verified: no receipt came back with this diagnosis");
    return li;
  }
  // A gRPC diagnosis keeps the response body as base64 (it is binary protobuf).
  const grpc = d.responseEncoding === "grpc";
  const body = grpc ? b64ToBytes(d.response) : d.response;
  const res = await verifyReceipt(verifier, d.receipt, body);
  if (res.ok) {
    // The label shown must be the one in the response the receipt covers, not just the app's copy.
    const covered = grpc ? labelOfGRPC(body) : labelOf(d.response);
    if (covered !== d.label) {
      res.ok = false;
      res.reason = `the stored label "${d.label}" is not the one in the countersigned response ("${covered}")`;
    }
  }
  if (!res.ok) {
    setStatus(status, "not-verified", "Receipt not verified");
    li.append(el("p", { class: "reason", "data-testid": "receipt-reason" }, res.reason));
    return li;
  }
  const sim = res.hops.some((h) => h.simulated) || (res.answerer && res.answerer.simulated);
  setStatus(status, "verified", sim ? "Receipt verified (simulated enclaves)" : "Receipt verified");
  const hops = el("ol", { class: "hops", "aria-label": "Enclaves that handled this diagnosis" });
  res.hops.forEach((h, i) => hops.append(hopItem(h, i === 0 ? "Request signed by" : "Forwarded by")));
  hops.append(hopItem(res.answerer, "Answered and countersigned by"));
  li.append(el("p", {}, "Enclaves that handled it:"), hops);
  return li;
}

// labelOfGRPC is labelOf for a gRPC ModelInferResponse body (a length-prefixed protobuf
// message): its raw_output_contents (field 6) hold the classification, each element a
// little-endian u32 length and "score:index:label". Only what that needs is read: the wire
// types of protobuf (varint, 64-bit, length-delimited, 32-bit), never a schema.
function labelOfGRPC(body) {
  try {
    if (body.length < 5 || body[0] !== 0) return "";
    const msg = body.subarray(5, 5 + new DataView(body.buffer, body.byteOffset).getUint32(1));
    const varint = (b, o) => {
      let v = 0, m = 1;
      for (;;) {
        const x = b[o++];
        if (x === undefined) throw new Error("truncated");
        v += (x & 0x7f) * m; m *= 128;
        if (!(x & 0x80)) return [v, o];
      }
    };
    let best = null;
    for (let o = 0; o < msg.length;) {
      let key; [key, o] = varint(msg, o);
      const wire = key % 8, field = Math.floor(key / 8);
      if (wire === 0) { [, o] = varint(msg, o); continue; }
      if (wire === 1) { o += 8; continue; }
      if (wire === 5) { o += 4; continue; }
      if (wire !== 2) return "";
      let n; [n, o] = varint(msg, o);
      const part = msg.subarray(o, o + n);
      o += n;
      if (field !== 6) continue;
      const dv = new DataView(part.buffer, part.byteOffset, part.byteLength);
      for (let p = 0; p + 4 <= part.length;) {
        const len = dv.getUint32(p, true);
        const [score, , label] = new TextDecoder().decode(part.subarray(p + 4, p + 4 + len)).split(":");
        p += 4 + len;
        if (label !== undefined && (best === null || Number(score) > best.score)) best = { score: Number(score), label };
      }
    }
    return best ? best.label : "";
  } catch (e) {
    return "";
  }
}

// labelOf returns the top class of an OIP classification response ("score:index:label").
function labelOf(body) {
  try {
    const out = JSON.parse(body).outputs.find((o) => o.name === "probabilities");
    let best = null;
    for (const item of out.data) {
      const [score, , label] = item.split(":");
      if (best === null || Number(score) > best.score) best = { score: Number(score), label };
    }
    return best ? best.label : "";
  } catch (e) {
    return "";
  }
}

// --- Forms ---

function formKey(form) {
  // One idempotency key per submission attempt of unchanged content: a retry never writes twice.
  if (!form.dataset.key) form.dataset.key = crypto.randomUUID();
  return form.dataset.key;
}

async function onPatientSubmit(ev) {
  ev.preventDefault();
  const f = ev.target;
  const err = $("patient-error");
  err.hidden = true;
  const body = {};
  for (const [k, v] of new FormData(f)) if (v !== "") body[k] = v;
  try {
    const p = await api("POST", "/api/patients", JSON.stringify(body), { "Content-Type": "application/json", "Idempotency-Key": formKey(f) });
    delete f.dataset.key;
    f.reset();
    await loadPatients();
    await selectPatient(p.id);
  } catch (e) {
    err.textContent = e.message;
    err.hidden = false;
  }
}

async function onScanSubmit(ev) {
  ev.preventDefault();
  const f = ev.target;
  const err = $("scan-error");
  err.hidden = true;
  const file = $("s-file").files[0];
  if (!file) {
    err.textContent = "Choose a scan image first.";
    err.hidden = false;
    $("s-file").focus();
    return;
  }
  const type = file.type === "image/png" ? "image/png" : "application/octet-stream";
  const title = encodeURIComponent($("s-title").value || "Chest scan");
  $("scan-progress").textContent = "Uploading and diagnosing…";
  try {
    await api("POST", `/api/patients/${current}/scans?title=${title}`, file, { "Content-Type": type, "Idempotency-Key": formKey(f) });
    delete f.dataset.key;
    f.reset();
    $("scan-progress").textContent = "Diagnosis stored.";
    await loadRecords();
  } catch (e) {
    $("scan-progress").textContent = "";
    err.textContent = e.message;
    err.hidden = false;
  }
}

async function main() {
  let cfg;
  try {
    cfg = await (await fetch("config.json", { cache: "no-store" })).json();
  } catch (e) {
    setStatus($("att-status"), "not-verified", "Not verified: the portal has no configuration (config.json)");
    return;
  }
  verifier = new Verifier(cfg.issuers, cfg.identities);
  $("patient-form").addEventListener("submit", onPatientSubmit);
  $("scan-form").addEventListener("submit", onScanSubmit);
  $("att-recheck").addEventListener("click", () => checkAttestation(cfg));
  for (const input of document.querySelectorAll("#patient-form input, #scan-form input")) {
    input.addEventListener("input", (ev) => delete ev.target.form.dataset.key);
  }
  document.body.dataset.ready = "true";
  await Promise.all([checkAttestation(cfg), loadPatients().catch((e) => { $("patients").replaceChildren(el("li", { class: "error" }, e.message)); })]);
}

export { hopInfo };
main();
