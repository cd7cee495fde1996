// Parsing what Redfish services send, against the published mockups (test/fixtures/redfish) and
// the error bodies iLO 5 and DMTF services answer with.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, it } from "node:test";
import {
  allowableFromActionInfo,
  describeMessages,
  extendedInfo,
  isInvalidForSystemState,
  memberPaths,
  messageKey,
  parseEndpoint,
  powerStateOf,
  resetActionOf,
} from "./redfish-messages.js";

const FIXTURES = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "test", "fixtures", "redfish");
const mockup = (set: string, path: string): unknown =>
  JSON.parse(readFileSync(join(FIXTURES, set, "redfish", "v1", path, "index.json"), "utf8"));

describe("Redfish parsing", () => {
  it("parses endpoints: https only, no credentials, /redfish/v1 by default", () => {
    assert.deepEqual(parseEndpoint("https://10.0.0.11"), {
      origin: "https://10.0.0.11",
      rootPath: "/redfish/v1",
      url: "https://10.0.0.11/redfish/v1",
    });
    assert.equal(parseEndpoint("https://10.0.0.11/redfish/v1/").url, "https://10.0.0.11/redfish/v1");
    assert.equal(parseEndpoint("https://bmc.example:8443/redfish/v1").origin, "https://bmc.example:8443");
    assert.equal(parseEndpoint("https://[fd00::11]/").url, "https://[fd00::11]/redfish/v1");
    assert.throws(() => parseEndpoint("http://10.0.0.11"), /only travel over https/);
    assert.throws(
      () => parseEndpoint("https://root:secret@10.0.0.11"),
      (e: Error) => /must not carry a username or password/.test(e.message) && !e.message.includes("secret"),
    );
    assert.throws(() => parseEndpoint("10.0.0.11"), /is not a URL/);
    assert.throws(() => parseEndpoint("https://10.0.0.11/redfish/v1?x=1"), /query or fragment/);
  });

  it("maps PowerState exactly: only the four Redfish values are known", () => {
    assert.equal(powerStateOf("Off"), "Off");
    assert.equal(powerStateOf("PoweringOff"), "PoweringOff");
    for (const other of ["off", "OFF", "Paused", "", undefined, 0]) assert.equal(powerStateOf(other), "Unknown");
  });

  it("reads the reset action and its allowable values from both mockups", () => {
    const ilo = resetActionOf(mockup("ilo5", "Systems/1"), "/redfish/v1/Systems/1");
    assert.equal(ilo.target, "/redfish/v1/Systems/1/Actions/ComputerSystem.Reset");
    assert.deepEqual(ilo.allowableResetTypes, [
      "On",
      "ForceOff",
      "GracefulShutdown",
      "ForceRestart",
      "Nmi",
      "PushPowerButton",
      "GracefulRestart",
    ]);
    const dmtf = resetActionOf(mockup("dmtf", "Systems/437XR1138R2"), "/redfish/v1/Systems/437XR1138R2");
    assert.ok(dmtf.allowableResetTypes.includes("ForceOn"));
    assert.deepEqual(memberPaths(mockup("dmtf", "Systems")), ["/redfish/v1/Systems/437XR1138R2"]);
    // A system without an Actions block: the conventional target, no allowable values.
    assert.deepEqual(resetActionOf({}, "/redfish/v1/Systems/9/"), {
      target: "/redfish/v1/Systems/9/Actions/ComputerSystem.Reset",
      allowableResetTypes: [],
    });
    const withInfo = resetActionOf(
      { Actions: { "#ComputerSystem.Reset": { target: "/t", "@Redfish.ActionInfo": "/redfish/v1/Systems/1/ResetActionInfo" } } },
      "/s",
    );
    assert.equal(withInfo.actionInfo, "/redfish/v1/Systems/1/ResetActionInfo");
    assert.deepEqual(allowableFromActionInfo({ Parameters: [{ Name: "ResetType", AllowableValues: ["On", "ForceOff"] }] }), [
      "On",
      "ForceOff",
    ]);
  });

  it("reads @Message.ExtendedInfo: iLO's bare MessageIds get their registry text", () => {
    // A real iLO 5 404 body (a capture artefact of the mockup creator, see SOURCES.md).
    const notFound = extendedInfo(mockup("ilo5", "SessionService/Sessions0000000062583c87d6242854"));
    assert.deepEqual(notFound, [
      {
        messageId: "Base.1.4.ResourceMissingAtURI",
        message: "The resource at the URI /redfish/v1/SessionService/Sessions0000000062583c87d6242854 was not found.",
        severity: "",
        resolution: "",
        messageArgs: ["/redfish/v1/SessionService/Sessions0000000062583c87d6242854"],
      },
    ]);
    const refused = extendedInfo({
      error: {
        code: "iLO.0.10.ExtendedInfo",
        message: "See @Message.ExtendedInfo for more information.",
        "@Message.ExtendedInfo": [{ MessageId: "iLO.2.14.InvalidOperationForSystemState" }],
      },
    });
    assert.equal(messageKey("iLO.2.14.InvalidOperationForSystemState"), "iLO.InvalidOperationForSystemState");
    assert.ok(isInvalidForSystemState(refused));
    assert.match(
      describeMessages(refused),
      /^iLO\.2\.14\.InvalidOperationForSystemState: The operation was not successful due to the current power state/,
    );
    const dmtf = extendedInfo({
      error: {
        code: "Base.1.18.GeneralError",
        message: "x",
        "@Message.ExtendedInfo": [
          {
            MessageId: "Base.1.18.InternalError",
            Message: "Boom.",
            MessageSeverity: "Critical",
            Resolution: "Resubmit the request.",
            MessageArgs: [1],
          },
        ],
      },
    });
    assert.deepEqual(dmtf, [
      {
        messageId: "Base.1.18.InternalError",
        message: "Boom.",
        severity: "Critical",
        resolution: "Resubmit the request.",
        messageArgs: ["1"],
      },
    ]);
    assert.equal(describeMessages(dmtf), "Base.1.18.InternalError: Boom (resolution: Resubmit the request)");
    // An error without ExtendedInfo still says something; a success body with none says nothing.
    assert.deepEqual(
      extendedInfo({ error: { code: "Oops", message: "broken" } }).map((m) => m.message),
      ["broken"],
    );
    assert.deepEqual(
      extendedInfo({ "@Message.ExtendedInfo": [{ MessageId: "Base.1.4.Success" }] }).map((m) => m.message),
      ["Successfully Completed Request."],
    );
    assert.deepEqual(extendedInfo(undefined), []);
    assert.deepEqual(extendedInfo("text"), []);
  });
});
