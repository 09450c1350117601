import { isDroverError } from '@drover/core';
import type { VmcastSubscriptionRecord } from '../store/index.js';
import { canonicalManifest, verifyBytes, type EvaReleaseManifest, type PackageManifest, type ReleaseManifest } from './manifest.js';

/** A feed item refused before anything is downloaded: its message is the reason recorded with the quarantine. */
class RefusedItem extends Error {}

/** What the checks read of a feed item (a release, a package or an appliance package). */
export interface SignedFeedItem {
  manifest: ReleaseManifest | PackageManifest | EvaReleaseManifest;
  url: string;
  length: number;
  keyId: string;
  signature: string;
}

/** Throws (a refusal whose message is the reason) unless `keyId` is pinned for `sub`, not revoked, and its signature over `manifest` verifies. */
export function checkPinnedSignature(sub: VmcastSubscriptionRecord, manifest: SignedFeedItem['manifest'], keyId: string, signature: string): void {
  const pin = sub.pinnedKeys.find((p) => p.keyId === keyId);
  if (!pin) throw new RefusedItem(`it is signed by key ${keyId.slice(0, 16)}…, which is not pinned for this subscription`);
  if (pin.revoked) throw new RefusedItem(`it is signed by key ${keyId.slice(0, 16)}…, which is revoked`);
  if (!verifyBytes(canonicalManifest(manifest), signature, pin.publicKey)) throw new RefusedItem(`its signature does not verify with the pinned key ${keyId.slice(0, 16)}…`);
}

/**
 * Why a feed item is refused before anything is downloaded, or undefined: its
 * enclosure URL outside the subscription's hosts, a length other than the
 * signed size, a size over `maxBytes`, a name or version that does not match,
 * or a key that is not pinned, revoked, or whose signature does not verify.
 */
export function itemRefusal(
  sub: VmcastSubscriptionRecord,
  item: SignedFeedItem,
  o: { checkUrl: (url: string, allowedHosts: string[], what: string) => unknown; maxBytes: number; nameOk: RegExp; versionOk: RegExp; invalidName: string },
): string | undefined {
  const m = item.manifest;
  try {
    o.checkUrl(item.url, sub.allowedHosts, 'The enclosure URL');
    if (item.length !== m.sizeBytes) throw new RefusedItem(`the enclosure length ${item.length} differs from the signed size ${m.sizeBytes}`);
    if (m.sizeBytes > o.maxBytes) throw new RefusedItem(`its size ${m.sizeBytes} is over the limit of ${o.maxBytes} bytes`);
    if (!o.nameOk.test(m.name) || !o.versionOk.test(m.version)) throw new RefusedItem(o.invalidName);
    checkPinnedSignature(sub, m, item.keyId, item.signature);
    return undefined;
  } catch (cause) {
    return cause instanceof RefusedItem || isDroverError(cause) ? (cause as Error).message : String(cause);
  }
}
