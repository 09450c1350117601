import { useEffect, useRef, type ReactNode } from 'react';
import { pageMoves } from '../router.js';

let focusedAt = 0;

/**
 * The page's <h1>: sets the document title and, after a client-side
 * navigation, takes the focus so that keyboard and screen-reader users land
 * on the new page rather than on the link they left.
 */
export function PageTitle({ title, children, actions }: { title: string; children?: ReactNode; actions?: ReactNode }) {
  const ref = useRef<HTMLHeadingElement>(null);
  useEffect(() => {
    document.title = `${title} · Drover`;
  }, [title]);
  useEffect(() => {
    // Once per move to a page: not on the first load, not when the title merely re-mounts.
    if (pageMoves() > focusedAt) {
      focusedAt = pageMoves();
      ref.current?.focus({ preventScroll: true });
    }
  }, []);
  return (
    <div className="page-head">
      <h1 ref={ref} tabIndex={-1}>
        {children ?? title}
      </h1>
      {actions && <div className="page-actions">{actions}</div>}
    </div>
  );
}
