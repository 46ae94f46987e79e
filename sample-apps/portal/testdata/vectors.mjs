// Runs the portal's browser verifier (verify.js) on every receipt of docs/vectors and prints
// one JSON line per case: {name, ok, reason}. Used by vectors_test.go; Node 20 has WebCrypto
// and fetch (the issuer's /certs document is given as a data: URL, no network).
import { readFileSync } from "node:fs";
import { Verifier, verifyReceipt } from "../verify.js";

const dir = process.argv[2];
const keys = JSON.parse(readFileSync(`${dir}/keys.json`, "utf8"));
const certs = readFileSync(`${dir}/certs.json`);
const certsURL = "data:application/json;base64," + certs.toString("base64");
const identities = {};
for (const h of keys.hops) identities[h.name] = { mrenclave: [h.mrenclave] };
const cases = JSON.parse(readFileSync(`${dir}/cases.json`, "utf8"));
for (const c of cases) {
  const v = new Verifier([{ url: keys.issuer.url, certsURL }], identities);
  const receipt = readFileSync(`${dir}/${c.file}`, "utf8");
  let res;
  try {
    res = await verifyReceipt(v, receipt);
  } catch (e) {
    res = { ok: false, reason: `threw: ${e.message}` };
  }
  console.log(JSON.stringify({ name: c.name, ok: res.ok, reason: res.reason }));
}
