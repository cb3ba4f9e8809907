/**
 * The OTA PAL qualification cases (FreeRTOS-Libraries-Integration-Tests, ota_pal_test.c, first
 * edition's 25 cases) that apply to a flash PAL without a file system, with the strict error
 * codes of the final edition. The "file" is a real signed image, because this PAL verifies the
 * image as the bootloader will when it closes the file.
 *
 * otaPal_CloseFile_ValidSignatureKeyInFlash takes the verification certificate from the device's
 * key store in flash (its trust store, under the PKCS#11 label "Code Verify Key"), not from the
 * boot ROM's certificates: all 25 cases run.
 */
import assert from "node:assert/strict";
import { signData } from "../../protocol/signatures.ts";
import { Device } from "../../bootloader/device.ts";
import { CODE_VERIFY_KEY } from "../../protocol/job_document.ts";
import { signTrustUpdate } from "../../protocol/trust_update.ts";
import { certificateDer } from "../../protocol/certificates.ts";
import { FwuState } from "../../bootloader/fwu.ts";
import { type OtaFileContext } from "../../bootloader/ota_pal.ts";
import {
  OtaImageState,
  OtaPalImageState,
  otaPalMain,
  OtaPalMainStatus,
  otaPalStatus,
} from "../../protocol/ota_pal_status.ts";
import { factoryDevice, SIGNER_CERT_PATH, testImage, testPki } from "../helpers/pki.ts";
import { fileFor, writeAll } from "../helpers/update.ts";

const image = await testImage({ version: "1.1.0", securityCounter: 2, payloadSize: 3000 });
const SUCCESS = otaPalStatus(OtaPalMainStatus.Success);
const main = otaPalMain;

/** Setup as in the suite (a fresh file context) and teardown (abort must succeed). */
function palCase(
  name: string,
  body: (device: Device, file: OtaFileContext) => Promise<void> | void,
) {
  Deno.test(name, async () => {
    const { device } = await factoryDevice();
    await device.powerOn();
    const file = await fileFor(image);
    await body(device, file);
    if (device.state === "running") {
      const aborted = device.pal.abort(file);
      assert.ok(
        [OtaPalMainStatus.Success, OtaPalMainStatus.AbortFailed].includes(main(aborted) as 0),
        "teardown abort",
      );
    }
  });
}

async function invalidSignature(): Promise<Uint8Array> {
  const signature = await signData((await testPki()).signerKeys.privateKey, image);
  signature[signature.length - 1]! ^= 0x55;
  return signature;
}

palCase("otaPal_CloseFile_ValidSignature", async (device, file) => {
  assert.equal(device.pal.createFileForRx(file), SUCCESS);
  writeAll(device, file, image);
  assert.equal(await device.pal.closeFile(file), SUCCESS);
});

Deno.test("otaPal_CloseFile_ValidSignatureKeyInFlash", async () => {
  const pki = await testPki();
  const { device: factory } = await factoryDevice();
  // A chip whose boot ROM holds the root only: the signer's certificate is provisioned into the
  // key store in flash, as the suite's PKCS#11 provisioning does.
  const device = new Device({
    layout: factory.layout,
    rom: { root: pki.root },
    flash: factory.flash,
  });
  await device.powerOn();
  const file = { ...await fileFor(image), certFilePath: CODE_VERIFY_KEY };
  assert.equal(device.pal.readAndAssumeCertificate(CODE_VERIFY_KEY), null, "not in the boot ROM");
  const provisioned = await device.applyTrustUpdate(
    await signTrustUpdate(
      {
        version: 1,
        signers: [{ label: CODE_VERIFY_KEY, certificate: certificateDer(pki.signer) }],
        revoked: [],
      },
      (bytes) => signData(pki.rootKeys.privateKey, bytes),
    ),
  );
  assert.deepEqual(provisioned, { ok: true });
  assert.equal(device.pal.createFileForRx(file), SUCCESS);
  writeAll(device, file, image);
  assert.equal(await device.pal.closeFile(file), SUCCESS);
  assert.equal(device.pal.abort(file), SUCCESS);
});

palCase("otaPal_CloseFile_InvalidSignatureBlockWritten", async (device, file) => {
  file.signature = await invalidSignature();
  assert.equal(device.pal.createFileForRx(file), SUCCESS);
  writeAll(device, file, image);
  assert.equal(main(await device.pal.closeFile(file)), OtaPalMainStatus.SignatureCheckFailed);
});

palCase("otaPal_CloseFile_InvalidSignatureNoBlockWritten", async (device, file) => {
  file.signature = await invalidSignature();
  assert.equal(device.pal.createFileForRx(file), SUCCESS);
  assert.equal(main(await device.pal.closeFile(file)), OtaPalMainStatus.SignatureCheckFailed);
});

palCase("otaPal_CloseFile_NonexistingCodeSignerCertificate", async (device, file) => {
  file.certFilePath = "nonexistingfile.crt";
  assert.equal(device.pal.createFileForRx(file), SUCCESS);
  writeAll(device, file, image);
  assert.equal(main(await device.pal.closeFile(file)), OtaPalMainStatus.BadSignerCert);
});

palCase("otaPal_CreateFileForRx_CreateAnyFile", (device, file) => {
  assert.equal(device.pal.createFileForRx(file), SUCCESS);
  assert.ok(file.fileHandle);
});

palCase("otaPal_Abort_OpenFile", (device, file) => {
  assert.equal(device.pal.createFileForRx(file), SUCCESS);
  assert.equal(device.pal.abort(file), SUCCESS);
  assert.equal(file.fileHandle, null);
});

palCase("otaPal_Abort_FileWithBlockWritten", (device, file) => {
  assert.equal(device.pal.createFileForRx(file), SUCCESS);
  writeAll(device, file, image.subarray(0, 1024));
  assert.equal(device.pal.abort(file), SUCCESS);
  assert.equal(file.fileHandle, null);
  assert.equal(device.fwu.state, FwuState.READY, "an aborted download is cleaned away");
});

palCase("otaPal_Abort_NullFileHandle", (device, file) => {
  file.fileHandle = null;
  assert.equal(device.pal.abort(file), SUCCESS);
  assert.equal(device.pal.abort(null), SUCCESS);
});

palCase("otaPal_Abort_NonExistentFile", (device, file) => {
  file.filePath = "nonexistingfile.bin";
  assert.equal(device.pal.abort(file), SUCCESS);
});

palCase("otaPal_WriteBlock_WriteSingleByte", (device, file) => {
  assert.equal(device.pal.createFileForRx(file), SUCCESS);
  assert.equal(device.pal.writeBlock(file, 0, new Uint8Array([0x3d])), 1);
});

palCase("otaPal_WriteBlock_WriteManyBlocks", (device, file) => {
  const pageSize = 1024;
  file.fileSize = pageSize * 10;
  assert.equal(device.pal.createFileForRx(file), SUCCESS);
  const dummy = new Uint8Array(84).map((_, i) => i);
  for (let i = 0; i < 10; i++) {
    assert.equal(device.pal.writeBlock(file, i * pageSize, dummy), dummy.length);
  }
});

palCase("otaPal_ActivateNewImage_HappyPath", async (device, file) => {
  assert.equal(device.pal.createFileForRx(file), SUCCESS);
  writeAll(device, file, image);
  assert.equal(await device.pal.closeFile(file), SUCCESS);
  assert.equal(device.pal.activateNewImage(file), SUCCESS);
  await device.settle();
  assert.equal(device.running?.version, "1.1.0+0", "the activated image boots (on trial)");
  assert.equal(device.pal.getPlatformImageState(null), OtaPalImageState.PendingCommit);
});

palCase("otaPal_SetPlatformImageState_SelfTestImageState", (device, file) => {
  assert.equal(device.pal.createFileForRx(file), SUCCESS);
  writeAll(device, file, image.subarray(0, 1024));
  assert.equal(device.pal.setPlatformImageState(file, OtaImageState.Testing), SUCCESS);
});

palCase("otaPal_SetPlatformImageState_InvalidImageState", (device, file) => {
  assert.equal(
    main(device.pal.setPlatformImageState(file, OtaImageState.Aborted + 1)),
    OtaPalMainStatus.BadImageState,
  );
});

palCase("otaPal_SetPlatformImageState_UnknownImageState", (device, file) => {
  assert.equal(
    main(device.pal.setPlatformImageState(file, OtaImageState.Unknown)),
    OtaPalMainStatus.BadImageState,
  );
});

palCase("otaPal_SetPlatformImageState_RejectImageState", (device, file) => {
  assert.equal(device.pal.createFileForRx(file), SUCCESS);
  writeAll(device, file, image.subarray(0, 1024));
  assert.equal(device.pal.setPlatformImageState(file, OtaImageState.Rejected), SUCCESS);
  assert.equal(device.pal.getPlatformImageState(file), OtaPalImageState.Invalid);
});

palCase("otaPal_SetPlatformImageState_AbortImageState", (device, file) => {
  assert.equal(device.pal.createFileForRx(file), SUCCESS);
  writeAll(device, file, image.subarray(0, 1024));
  assert.equal(device.pal.setPlatformImageState(file, OtaImageState.Aborted), SUCCESS);
  assert.equal(device.fwu.state, FwuState.READY);
});

palCase("otaPal_SetPlatformImageState_AcceptedImageStateButImageNotClosed", (device, file) => {
  assert.equal(device.pal.createFileForRx(file), SUCCESS);
  writeAll(device, file, image);
  assert.equal(
    main(device.pal.setPlatformImageState(file, OtaImageState.Accepted)),
    OtaPalMainStatus.CommitFailed,
  );
});

palCase(
  "otaPal_GetPlatformImageState_InvalidImageStateFromFileCloseFailure",
  async (device, file) => {
    file.signature = await invalidSignature();
    assert.equal(device.pal.createFileForRx(file), SUCCESS);
    writeAll(device, file, image);
    assert.notEqual(main(await device.pal.closeFile(file)), OtaPalMainStatus.Success);
    assert.ok(
      [OtaPalImageState.Invalid, OtaPalImageState.Unknown].includes(
        device.pal.getPlatformImageState(file) as 3,
      ),
    );
  },
);

palCase("otaPal_ReadAndAssumeCertificate_ExistingFile", (device) => {
  const cert = device.pal.readAndAssumeCertificate(SIGNER_CERT_PATH);
  assert.ok(cert && cert.size > 0 && cert.certificate.length === cert.size);
});

palCase("otaPal_ReadAndAssumeCertificate_NonexistentFile", (device) => {
  assert.equal(device.pal.readAndAssumeCertificate("nonexistingfile.crt"), null);
});

palCase("prvPAL_CheckFileSignature_ValidSignature", async (device, file) => {
  assert.equal(device.pal.createFileForRx(file), SUCCESS);
  writeAll(device, file, image);
  assert.equal(await device.pal.checkFileSignature(file), SUCCESS);
});

palCase("prvPAL_CheckFileSignature_InvalidSignatureBlockWritten", async (device, file) => {
  file.signature = await invalidSignature();
  assert.equal(device.pal.createFileForRx(file), SUCCESS);
  writeAll(device, file, image);
  assert.equal(
    main(await device.pal.checkFileSignature(file)),
    OtaPalMainStatus.SignatureCheckFailed,
  );
});

palCase("prvPAL_CheckFileSignature_InvalidSignatureNoBlockWritten", async (device, file) => {
  file.signature = await invalidSignature();
  assert.equal(device.pal.createFileForRx(file), SUCCESS);
  assert.equal(
    main(await device.pal.checkFileSignature(file)),
    OtaPalMainStatus.SignatureCheckFailed,
  );
});

palCase("prvPAL_CheckFileSignature_NonexistingCodeSignerCertificate", async (device, file) => {
  file.certFilePath = "nonexistingfile.crt";
  assert.equal(device.pal.createFileForRx(file), SUCCESS);
  writeAll(device, file, image);
  assert.equal(main(await device.pal.checkFileSignature(file)), OtaPalMainStatus.BadSignerCert);
});

// Beyond the qualification suite: what the agent relies on.

palCase(
  "OTA PAL: out-of-range writes fail and too-large files are refused at create",
  (device, file) => {
    assert.equal(device.pal.writeBlock(file, 0, new Uint8Array(8)), -1, "no open file");
    assert.equal(device.pal.createFileForRx(file), SUCCESS);
    assert.ok(device.pal.writeBlock(file, file.fileSize - 4, new Uint8Array(8)) < 0);
    assert.ok(device.pal.writeBlock(file, 3, new Uint8Array(8)) < 0, "misaligned");
    assert.ok(device.pal.writeBlock(file, -8, new Uint8Array(8)) < 0);
    const huge = { ...file, fileSize: device.fwu.maxSize + 1, fileHandle: null };
    assert.equal(main(device.pal.createFileForRx(huge)), OtaPalMainStatus.RxFileTooLarge);
  },
);

palCase("OTA PAL: abort after a verified close never erases the image", async (device, file) => {
  assert.equal(device.pal.createFileForRx(file), SUCCESS);
  writeAll(device, file, image);
  assert.equal(await device.pal.closeFile(file), SUCCESS);
  assert.equal(device.pal.abort(file), SUCCESS);
  assert.equal(device.fwu.state, FwuState.CANDIDATE);
  assert.equal(device.pal.activateNewImage(null), SUCCESS);
  await device.settle();
  assert.equal(device.running?.version, "1.1.0+0");
});

palCase(
  "OTA PAL: a certificate from another root or without the code-signing EKU is a bad signer",
  async (device, file) => {
    const pki = await testPki();
    const rogueRom = {
      ...pki.rom,
      certificates: new Map([["rogue.pem", pki.rogue.toString("pem")]]),
    };
    const { OtaPal } = await import("../../bootloader/ota_pal.ts");
    const pal = new OtaPal({ fwu: device.fwu, rom: rogueRom, clock: device.clock });
    file.certFilePath = "rogue.pem";
    file.signature = await signData(pki.rogueKeys.privateKey, image);
    assert.equal(pal.createFileForRx(file), SUCCESS);
    writeAll(device, file, image);
    assert.equal(main(await pal.closeFile(file)), OtaPalMainStatus.BadSignerCert);
    assert.match(pal.lastError ?? "", /trusted root/);
  },
);

palCase(
  "OTA PAL: accept is idempotent after commit and the self-test path reports PendingCommit then Valid",
  async (device, file) => {
    assert.equal(device.pal.createFileForRx(file), SUCCESS);
    writeAll(device, file, image);
    assert.equal(await device.pal.closeFile(file), SUCCESS);
    assert.equal(device.pal.setPlatformImageState(file, OtaImageState.Testing), SUCCESS);
    assert.equal(device.pal.activateNewImage(file), SUCCESS);
    await device.settle();
    assert.equal(device.pal.getPlatformImageState(null), OtaPalImageState.PendingCommit);
    assert.equal(device.pal.setPlatformImageState(null, OtaImageState.Accepted), SUCCESS);
    assert.equal(device.pal.getPlatformImageState(null), OtaPalImageState.Valid);
    assert.equal(
      device.pal.setPlatformImageState(null, OtaImageState.Accepted),
      SUCCESS,
      "a repeated accept after a lost job update",
    );
    assert.equal(
      main(device.pal.setPlatformImageState(null, OtaImageState.Rejected)),
      OtaPalMainStatus.RejectFailed,
    );
  },
);

palCase("OTA PAL: rejecting a trial image reverts it at the reset", async (device, file) => {
  assert.equal(device.pal.createFileForRx(file), SUCCESS);
  writeAll(device, file, image);
  assert.equal(await device.pal.closeFile(file), SUCCESS);
  assert.equal(device.pal.activateNewImage(file), SUCCESS);
  await device.settle();
  assert.equal(device.pal.setPlatformImageState(null, OtaImageState.Rejected), SUCCESS);
  assert.equal(device.pal.getPlatformImageState(null), OtaPalImageState.Invalid);
  assert.equal(device.pal.resetDevice(null), SUCCESS);
  await device.settle();
  assert.equal(device.running?.version, "1.0.0+0");
});
