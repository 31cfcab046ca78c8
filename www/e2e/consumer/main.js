// The smallest consumer of the npm package: init the wasm, read the version,
// and check that a bad model is refused with a typed, readable error.
import init, { Inspector, version } from "latentlens";

await init();
const result = { version: version() };
try {
  Inspector.fromBytes("broken", new TextEncoder().encode("{not json"), new Uint8Array(), new Uint8Array(), []);
  result.errorName = "none";
} catch (e) {
  result.errorName = e.name;
  result.message = e.message;
}
document.body.dataset.result = JSON.stringify(result);
