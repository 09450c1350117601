import type { LabExample, LabManifest } from '@drover/api';
import pentest from './examples/pentest.json' with { type: 'json' };
import webDb from './examples/web-db.json' with { type: 'json' };

/**
 * The labs shipped with Drover, built from the demo appliances
 * (`drover lab deploy --example NAME`, `GET /api/v1/lab-examples`). They are
 * lab manifests (LabManifest in @drover/api); the JSON files beside this one
 * are the source.
 */
export function labExamples(): LabExample[] {
  return [webDb as LabManifest, pentest as LabManifest].map((manifest) => ({ name: manifest.name, description: manifest.description ?? '', manifest: structuredClone(manifest) }));
}
