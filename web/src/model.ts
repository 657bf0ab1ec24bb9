// What the views share: the signed-in session, the project in view, the socket, and the
// API's closed sets (the same names the domain uses).

import type { Live } from './live';

export interface Session {
  key_id: string;
  role: 'reader' | 'writer' | 'auditor' | 'admin';
  project_id: number | null;
  expires_at: string | null;
  can_write: boolean;
  can_audit: boolean;
}

export interface Context {
  session: Session;
  project: number;
  live: Live;
  go: (hash: string) => void;
}

/** A view mounted into `root`; returns what stops it. */
export type View = (root: HTMLElement, ctx: Context, args: string[]) => () => void;

export interface Technology {
  id: string;
  project_id: number;
  title: string;
  vendor?: string | null;
  domain: string;
  status: string;
  relevance_score: number;
  priority: number;
  description?: string | null;
  notes?: string | null;
  use_cases?: string | null;
  website_url?: string | null;
  documentation_url?: string | null;
  repository_url?: string | null;
  tags?: string[];
  maturity_level?: string | null;
  cost_tier?: string | null;
  integration_difficulty?: string | null;
  version: number;
  created_at?: string;
  updated_at?: string;
  [field: string]: unknown;
}

export interface Job {
  id: string;
  project_id: number;
  job_type: string;
  status: string;
  progress: number;
  current_step?: string | null;
  parameters?: Record<string, unknown>;
  result?: unknown;
  error?: string | null;
  traceback?: string | null;
  attempts?: number;
  max_attempts?: number;
  tags?: string[];
  created_at?: string;
  started_at?: string | null;
  completed_at?: string | null;
  version: number;
  [field: string]: unknown;
}

export const DOMAINS = ['audio-dsp', 'ai-ml', 'music-theory', 'performance', 'ui-ux', 'infrastructure', 'other'];
/** Rings from the centre out: adopted first, then the stages before, archived outermost. */
export const STATUSES = ['integrated', 'implementation', 'evaluation', 'research', 'discovery', 'archived'];
export const MATURITY = ['alpha', 'beta', 'stable', 'mature', 'legacy'];
export const COST_TIERS = ['free', 'freemium', 'affordable', 'moderate', 'expensive', 'enterprise'];
export const JOB_STATUSES = ['pending', 'running', 'completed', 'failed', 'cancelled'];
export const JOB_TYPES = [
  'analysis',
  'scheduled_analysis',
  'export',
  'batch_analysis',
  'batch_export',
  'webhook_delivery',
  'noop',
];
