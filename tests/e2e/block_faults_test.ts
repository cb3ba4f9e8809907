/**
 * The device's link drops, doubles, reorders and corrupts stream blocks (the actor's fault
 * injection, applied between its socket and its agent): the download still ends with exactly the
 * published image, confirmed, and the faults really happened.
 */
import assert from "node:assert/strict";
import { bytesSource, decodeImage } from "../../protocol/image_format.ts";
import { toHex } from "../../lib/bytes.ts";
import { qualificationWorld } from "../helpers/qualification.ts";

Deno.test("block faults: a link that loses, doubles, reorders and damages blocks still delivers exactly the published image", async () => {
  const world = await qualificationWorld("MQTT");
  try {
    const { fleet, thing } = world;
    fleet.send(thing, { type: "block-faults", fault: "drop", count: 2 });
    fleet.send(thing, { type: "block-faults", fault: "duplicate", count: 2 });
    fleet.send(thing, { type: "block-faults", fault: "reorder", count: 2 });
    fleet.send(thing, { type: "corrupt-blocks", count: 2 });
    const jobId = await world.update("faulty-link", { version: "1.1.0", securityCounter: 2 });
    const execution = await world.ended(jobId, "SUCCEEDED");
    assert.equal(execution.statusDetails.reason, "accepted  v1.1.0");
    const report = await world.device();
    assert.deepEqual(
      {
        dropped: report.faults.droppedBlocks,
        duplicated: report.faults.duplicatedBlocks,
        reordered: report.faults.reorderedBlocks,
        corrupted: report.faults.corruptedBlocks,
      },
      { dropped: 2, duplicated: 2, reordered: 2, corrupted: 2 },
    );
    const published = decodeImage(bytesSource(await world.published(jobId)));
    assert.ok(published.ok);
    assert.equal(report.device.running?.imageSha256, toHex(published.image.sha256!));
    assert.equal(report.device.running?.trial, false);
    assert.equal(report.device.securityCounter, 2);
    assert.ok(
      world.logs.some((line) => /block dropped/.test(line)),
      "the damaged blocks were refused",
    );
  } catch (error) {
    console.log(world.logs.join("\n"));
    throw error;
  } finally {
    await world.close();
  }
});
