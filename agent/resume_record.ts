/**
 * What the agent keeps in the device's agent area across resets and power cuts: the record of a
 * download in progress (job, file, block size, signature and the bitmap of blocks still
 * needed), and the intent written before SUCCEEDED is reported. Stored as one JSON document
 * (`v: 1`) through the power-safe A/B store; anything unreadable counts as nothing stored.
 *
 * @example
 * ```ts ignore
 * const resume = new ResumeStore(store);
 * resume.saveRecord({ v: 1, jobId: "j1", fileIndex: 0, fileId: 0, fileSize: 4096,
 *   blockSize: 4096, signature: "...", bitmap: "AQ==" });
 * resume.loadRecord()?.jobId; // "j1"
 * ```
 *
 * @module
 */

/** Where the bytes live (the device's agent area: `bootloader/agent_store.ts`). */
export interface StateStore {
  load(): Uint8Array | null;
  save(bytes: Uint8Array): void;
}

/**
 * Written to flash before SUCCEEDED is reported, cleared once the image is confirmed: a power
 * cut between the cloud recording SUCCEEDED and the confirmation reverts the image, and this is
 * how the next boot learns that the cloud may believe an update the device no longer runs.
 */
export interface SuccessIntent {
  readonly jobId: string;
  /** Version word of the image reported (`updatedBy` form). */
  readonly image: string;
}

/** Persisted download record. */
export interface ResumeRecord {
  readonly v: 1;
  readonly jobId: string;
  readonly fileIndex: number;
  readonly fileId: number;
  readonly fileSize: number;
  readonly blockSize: number;
  readonly signature: string;
  readonly bitmap: string;
}

/** The agent's persisted state, read and written as a whole. */
export class ResumeStore {
  readonly #store: StateStore;
  /** The intent as last written (undefined: not read from flash yet this boot). */
  #intent: SuccessIntent | null | undefined = undefined;
  /** The trusted-time floor as last written (undefined: not read yet this boot). */
  #timeFloor: number | undefined = undefined;

  constructor(store: StateStore) {
    this.#store = store;
  }

  /** Saves the download record, keeping the intent. */
  saveRecord(record: ResumeRecord): void {
    this.#write(record, this.loadIntent());
  }

  #loadStored(): Record<string, unknown> | null {
    const bytes = this.#store.load();
    if (!bytes || bytes.length === 0) return null;
    try {
      const stored = JSON.parse(new TextDecoder().decode(bytes));
      return stored && typeof stored === "object" && stored.v === 1 ? stored : null;
    } catch {
      return null;
    }
  }

  /** The download record, if one was saved. */
  loadRecord(): ResumeRecord | null {
    const stored = this.#loadStored();
    return typeof stored?.jobId === "string" ? stored as unknown as ResumeRecord : null;
  }

  /** The success intent, if one was saved. */
  loadIntent(): SuccessIntent | null {
    // Read once per boot: every later write of the store goes through #write, which keeps it.
    if (this.#intent === undefined) {
      const intent = this.#loadStored()?.successReported as Partial<SuccessIntent> | undefined;
      this.#intent = typeof intent?.jobId === "string" && typeof intent.image === "string"
        ? { jobId: intent.jobId, image: intent.image }
        : null;
    }
    return this.#intent;
  }

  /**
   * The newest issue time of a job document this device accepted (epoch ms; 0: none): its
   * trusted time never goes below it (see protocol/job_metadata.ts).
   */
  loadTimeFloor(): number {
    if (this.#timeFloor === undefined) {
      const floor = this.#loadStored()?.timeFloor;
      this.#timeFloor = typeof floor === "number" && Number.isSafeInteger(floor) && floor > 0
        ? floor
        : 0;
    }
    return this.#timeFloor;
  }

  /**
   * Raises the trusted-time floor to `time` (a lower one changes nothing). It reaches flash with
   * the store's next write (the download record that follows a job's first blocks), not a write
   * of its own: one more flash record per device and job cost a fleet a tenth of its CPU, and a
   * raise lost to a power cut before then only leaves the floor where the last one put it.
   */
  raiseTimeFloor(time: number): void {
    if (time > this.loadTimeFloor()) this.#timeFloor = time;
  }

  #write(resume: ResumeRecord | null, intent: SuccessIntent | null): void {
    this.#intent = intent;
    const timeFloor = this.loadTimeFloor();
    if (!resume && !intent && timeFloor === 0) {
      const bytes = this.#store.load();
      if (bytes !== null && bytes.length > 0) this.#store.save(new Uint8Array(0));
      return;
    }
    // A record read back from flash carries the other fields too: each is written from its own.
    const { successReported: _intent, timeFloor: _floor, ...record } = (resume ?? {}) as
      & Partial<ResumeRecord>
      & Record<string, unknown>;
    const stored = {
      v: 1,
      ...record,
      ...(intent ? { successReported: intent } : {}),
      ...(timeFloor > 0 ? { timeFloor } : {}),
    };
    this.#store.save(new TextEncoder().encode(JSON.stringify(stored)));
  }

  /** Saves the success intent (before SUCCEEDED is reported), keeping the record. */
  saveIntent(intent: SuccessIntent): void {
    this.#write(this.loadRecord(), intent);
  }

  /** Clears the success intent (once the image is confirmed), keeping the record. */
  clearIntent(): void {
    if (this.loadIntent()) this.#write(this.loadRecord(), null);
  }

  /** Clears the download record, keeping the intent. */
  clearRecord(): void {
    if (this.loadRecord()) this.#write(null, this.loadIntent());
  }
}
